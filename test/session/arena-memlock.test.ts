// Review (review-c): the session arena keeps wiped buffers locked, and they count against
// RLIMIT_MEMLOCK (8 MiB for an unprivileged user) for everything else in the process. Only the
// arena's own take() gave them up when the limit was hit: a single-tensor read, a load of a
// session without reuse, or another session's arena then failed with ERR_MEMLOCK (and the model
// closed) although the memory it needed was only being kept for reuse. Root here has CAP_IPC_LOCK,
// so the limit is stood in for by the allocation throwing MemlockError, as the addon does.
import { afterEach, describe, expect, it, vi } from 'vitest';
import { MemlockError } from '../../src/errors.js';
import { SecureArena } from '../../src/native/secure-arena.js';
import { SecureBuffer } from '../../src/native/secure-buffer.js';
import { loadAddon } from '../../src/native/addon.js';
import { SessionModel, type SessionTensorInfo } from '../../src/session/session-model.js';
import type { NativeSealedModelReader } from '../../src/reader/native-model.js';
import type { SecureTensor } from '../../src/reader/native-file.js';

const arenas: SecureArena[] = [];
afterEach(() => {
  vi.restoreAllMocks();
  for (const a of arenas.splice(0)) a.close();
});

/** An arena holding one wiped, locked buffer of `size` bytes. */
function holding(size: number): SecureArena {
  const a = new SecureArena();
  arenas.push(a);
  a.give(a.take(size));
  expect(a.freeBytes).toBeGreaterThanOrEqual(size);
  return a;
}

const noRoom = (): never => {
  throw new MemlockError('cannot lock: RLIMIT_MEMLOCK (test stand-in)');
};

describe('secure memory kept by arenas gives way to other allocations at RLIMIT_MEMLOCK', () => {
  it("another arena's take() releases what every arena keeps and tries again", () => {
    const a = holding(1 << 20);
    const b = new SecureArena();
    arenas.push(b);
    vi.spyOn(SecureBuffer, 'reserve').mockImplementationOnce(noRoom);
    const got = b.take(256 << 10);
    expect(got.size).toBe(256 << 10);
    expect(a.freeBytes).toBe(0);
    got.release();
    // Nothing kept anywhere: the limit error is the caller's.
    vi.spyOn(SecureBuffer, 'reserve').mockImplementationOnce(noRoom);
    expect(() => b.take(4096)).toThrow(MemlockError);
  });

  it("a caller's own SecureBuffer.allocate / allocateAsync / reserve at the limit get what the arenas keep", async () => {
    const addon = loadAddon();
    const nativeNoRoom = (): never => {
      throw Object.assign(new Error('cannot lock (test stand-in)'), { code: 'ERR_MEMLOCK' });
    };
    for (const [name, make] of [
      ['secureAlloc', async () => SecureBuffer.allocate(4096)],
      ['secureAllocAsync', async () => SecureBuffer.allocateAsync(4096)],
      ['secureReserve', async () => SecureBuffer.reserve(4096)],
    ] as const) {
      const a = holding(1 << 20);
      vi.spyOn(addon, name).mockImplementationOnce(nativeNoRoom);
      const buf = await make();
      expect(buf.size, name).toBe(4096);
      expect(a.freeBytes, name).toBe(0);
      buf.release();
    }
    // Nothing kept: the caller gets the limit error.
    vi.spyOn(addon, 'secureAlloc').mockImplementationOnce(nativeNoRoom);
    expect(() => SecureBuffer.allocate(4096)).toThrow(MemlockError);
  });

  it("a single-tensor read that hits the limit while an arena keeps memory is retried once the arenas let go; the model stays open", async () => {
    const a = holding(1 << 20);
    const info: SessionTensorInfo = { name: 't', dtype: 'U8', shape: [4], byteLength: 4, begin: 0, end: 4, digest: '00'.repeat(32), file: 'm.sealed' };
    const tensor: SecureTensor = { info, bytes: new Uint8Array(4), release: () => {} };
    let calls = 0;
    const reader = {
      sharded: false,
      files: [],
      tensors: () => [info],
      readTensor: async () => {
        calls += 1;
        if (calls === 1) noRoom();
        return tensor;
      },
      close: () => {},
    } as unknown as NativeSealedModelReader;
    const model = new SessionModel(reader, false, { path: 'm.sealed', keyId: 'k', bundleId: 'b', headerDigest: 'd', sharded: false }, undefined, () => {}, () => {}, a);
    const t = await model.tensor('t');
    expect(t.info.name).toBe('t');
    expect(calls).toBe(2);
    expect(a.freeBytes).toBe(0);
    expect(model.closed).toBe(false);
    // With nothing kept, the limit error stands (and the model closes, as for any failed read).
    calls = 0;
    const err = await model.tensor('t').then(
      () => null,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(MemlockError);
    expect(calls).toBe(1);
    expect(model.closed).toBe(true);
  });
});
