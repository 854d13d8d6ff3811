// Review (review-c): a session whose key release ends before its token must still end with the
// token. The expiry timer fired once, at the earliest of them, released the ran-out key and was
// never armed again: an idle session then kept every loaded tensor (plaintext) and its arena's
// locked memory past its token's expiry, until something next called into it.
import { describe, expect, it, vi } from 'vitest';
import { ReleasedError } from '../../src/errors.js';
import { handles } from './ephemeral-recorder.js';

vi.mock('../../src/session/ephemeral.js', async () => await import('./ephemeral-recorder.js'));
import { lockedBytes, sealedFile } from './setup.js';
import { establish, useFakeKbs } from './harness.js';
import { TEST_KEY, tempDir } from '../helpers/tmp.js';

const broker = useFakeKbs();

describe('EnclaveSession expiry after an earlier key notAfter', () => {
  it('the token expiry still closes an idle session: loaded tensors wiped (views detached), arena released, keys released', async () => {
    const dir = tempDir();
    const model = await sealedFile(dir, 'm', TEST_KEY, 'k1');
    // The key's release ends 60 s in, the token 120 s in.
    const kbs = await broker({ k1: { key: TEST_KEY, models: [model.binding], notAfter: new Date(Date.now() + 60_000).toISOString() } }, { tokenTtlSeconds: 120 });
    // The session's timers on a fake clock that also runs with real time (sockets, jobs).
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'Date'], shouldAdvanceTime: true });
    const session = await establish(kbs, ['k1']);
    const keysOnly = lockedBytes();
    try {
      const m = await session.open(model.path);
      const all = await m.loadAll();
      const view = all.tensors.get('head')!.bytes;
      expect(view.byteLength).toBeGreaterThan(0);
      await vi.advanceTimersByTimeAsync(61_000); // the key's release ends: its handle goes
      expect(session.expired).toBe(false);
      await vi.advanceTimersByTimeAsync(60_000); // the token ends
      expect(session.expired).toBe(true);
      // Nothing called into the session: only its timer can have ended it.
      expect(view.byteLength).toBe(0);
      expect(() => all.tensors.get('head')!.bytes).toThrow(ReleasedError);
      expect(m.closed).toBe(true);
      expect(lockedBytes()).toBeLessThanOrEqual(keysOnly); // the arena's memory unmapped
      expect(handles.at(-1)!.released).toBe(true);
    } finally {
      session.close();
    }
  });
});
