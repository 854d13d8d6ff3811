// Outside review of the session side (issue 8): each test names the attack it stands for.
import { describe, expect, it, vi } from 'vitest';
import { DeniedError, NativeUnavailableError, SealedTensorsError } from '../../src/errors.js';
import { loadAddon } from '../../src/native/addon.js';
import { EnclaveSession } from '../../src/session/enclave-session.js';
import { handles } from './ephemeral-recorder.js';

vi.mock('../../src/session/ephemeral.js', async () => await import('./ephemeral-recorder.js'));
import { lockedBytes, sealedFile } from './setup.js';
import { establish, rejectionOf, useFakeKbs } from './harness.js';
import { TEST_KEY, tempDir } from '../helpers/tmp.js';

const broker = useFakeKbs();
const failure = rejectionOf;

describe('review: session expiry', () => {
  // Attack: a caller (or a compromised component in the process) keeps a model opened before the
  // broker's token ran out and goes on decrypting with it: the release is void, but the open
  // reader holds its own reference to the key region, so releasing the session's key handle at
  // expiry does not stop it.
  it('a model opened before the token ran out hands out no tensor after it (ERR_DENIED), and is closed', async () => {
    const dir = tempDir();
    const model = await sealedFile(dir, 'm', TEST_KEY, 'k1');
    const kbs = await broker({ k1: { key: TEST_KEY, models: [model.binding] } }, { tokenTtlSeconds: 120 });
    const session = await establish(kbs, ['k1']);
    try {
      const m = await session.open(model.path);
      const first = await m.tensor('embed.weight');
      vi.useFakeTimers({ toFake: ['Date'] });
      vi.setSystemTime(Date.now() + 121_000);
      expect(session.expired).toBe(true);
      const err = await failure(m.tensor('head'));
      expect(err).toBeInstanceOf(DeniedError);
      expect((err as DeniedError).reasons).toEqual(['session expired']);
      // Nothing of the expired session stays readable.
      expect(m.closed).toBe(true);
      expect(() => first.bytes).toThrow(SealedTensorsError);
      expect(handles.at(-1)!.released).toBe(true);
    } finally {
      session.close();
    }
  });

  // Attack: a broker (misconfigured or hostile) issues a token whose exp lies past what a Date
  // can hold. new Date(exp * 1000) is then Invalid Date, every "now >= expiresAt" is false, and
  // Math.min(manifest.notAfter, NaN) is NaN: the session never expires, and a release whose own
  // notAfter has already passed is accepted.
  it('a token whose exp is not a representable time is refused; a stale release is not revived by it', async () => {
    const dir = tempDir();
    const model = await sealedFile(dir, 'm', TEST_KEY, 'k1');
    const stale = new Date(Date.now() - 60_000).toISOString();
    const kbs = await broker({ k1: { key: TEST_KEY, models: [model.binding], notAfter: stale } }, { tokenTtlSeconds: 1e300 });
    const baseline = lockedBytes();
    let established: EnclaveSession | null = null;
    const err = await failure(establish(kbs, ['k1']).then((s) => (established = s)));
    if (established !== null) {
      (established as EnclaveSession).close();
      throw new Error('a session was established from a release whose notAfter had passed, under a token with exp 1e300');
    }
    expect(err).toBeInstanceOf(SealedTensorsError);
    expect(['ERR_PROTOCOL', 'ERR_DENIED']).toContain((err as SealedTensorsError).code);
    expect(handles.every((h) => h.released)).toBe(true);
    expect(lockedBytes()).toBe(baseline);
  });
});

describe('review: the ephemeral private key in unlocked memory', () => {
  // Attack: a co-resident process or the host reads swap (or a crash dump): the session's ephemeral
  // private key is generated in OpenSSL's secure heap, which the addon sets up on the first key; when
  // that arena cannot be locked (RLIMIT_MEMLOCK too small for it, e.g. `prlimit --memlock=65536`, see
  // test/native/jwe.test.ts), keys are still made in it, unlocked, and hardening() reports
  // opensslSecureHeap: false. The session looked only at "not dumpable": it established with
  // info.hardened true and no allowUnhardened. Here hardening() reports the unlocked heap.
  it('refuses to establish (unless allowUnhardened) when the key was made in an unlocked OpenSSL heap, and says so in info.hardened', async () => {
    const dir = tempDir();
    const model = await sealedFile(dir, 'm', TEST_KEY, 'k1');
    const kbs = await broker({ k1: { key: TEST_KEY, models: [model.binding] } });
    const addon = loadAddon();
    const real = addon.hardening.bind(addon);
    const spy = vi.spyOn(addon, 'hardening').mockImplementation(() => {
      const h = real();
      return { ...h, opensslSecureHeap: false, opensslSecureHeapDetail: { ...h.opensslSecureHeapDetail, locked: false, initResult: 2 } };
    });
    try {
      let established: EnclaveSession | null = null;
      const err = await failure(establish(kbs, ['k1']).then((s) => (established = s)));
      if (established !== null) {
        const hardened = (established as EnclaveSession).info.hardened;
        (established as EnclaveSession).close();
        throw new Error(`established over an unlocked OpenSSL secure heap, info.hardened ${hardened}`);
      }
      expect(err).toBeInstanceOf(NativeUnavailableError);
      expect(handles.every((h) => h.released)).toBe(true);
      const dev = await establish(kbs, ['k1'], { allowUnhardened: true });
      expect(dev.info.hardened).toBe(false);
      dev.close();
    } finally {
      spy.mockRestore();
    }
  });
});

describe('review: user callbacks and close during reads', () => {
  // Attack (careless caller): a progress listener throws. The tensor just decrypted was already
  // counted as handed out, but the caller never gets it: it sat in locked memory, unreachable,
  // until the model closed, and a load (tensors()) that ended this way left the model open.
  it('a progress listener that throws: the tensor it reported is wiped at once and a load closes the model', async () => {
    const dir = tempDir();
    const model = await sealedFile(dir, 'm', TEST_KEY, 'k1');
    const kbs = await broker({ k1: { key: TEST_KEY, models: [model.binding] } });
    const session = await establish(kbs, ['k1']);
    try {
      const m = await session.open(model.path);
      const before = lockedBytes();
      const boom = new Error('listener failed');
      m.on('progress', () => {
        throw boom;
      });
      expect(await failure(m.tensor('head'))).toBe(boom);
      expect(lockedBytes()).toBe(before); // nothing unreachable left in secure memory
      expect(m.closed).toBe(false); // a single read: the model stays usable
      const load = failure(
        (async () => {
          for await (const t of m.tensors()) t.release();
        })(),
      );
      expect(await load).toBe(boom);
      expect(m.closed).toBe(true);
    } finally {
      session.close();
    }
  });

  // (Coverage, passes on main) session.close() while a tensor is being decrypted: the read ends
  // in ReleasedError and nothing stays locked.
  it('session.close() during a read: ReleasedError, nothing left locked', async () => {
    const dir = tempDir();
    const model = await sealedFile(dir, 'm', TEST_KEY, 'k1');
    const kbs = await broker({ k1: { key: TEST_KEY, models: [model.binding] } });
    const baseline = lockedBytes();
    const session = await establish(kbs, ['k1']);
    const m = await session.open(model.path);
    const reading = failure(m.tensor('head'));
    session.close();
    const err = await reading;
    expect((err as SealedTensorsError).code).toBe('ERR_RELEASED');
    expect(lockedBytes()).toBe(baseline);
  });
});

describe('review: timeouts past what a timer holds', () => {
  // Careless caller: a "no deadline" timeout such as 2 ** 31 ms (or Number.MAX_SAFE_INTEGER) passes
  // the positive-integer check, and Node's setTimeout turns any delay over 2^31 - 1 into 1 ms: the
  // establishment then fails at once with a misleading "did not complete within 2147483648 ms".
  it('a timeout past 2^31 - 1 ms is refused up front as InvalidArgumentError, before any request', async () => {
    const kbs = await broker({});
    for (const bad of [{ timeoutMs: 2 ** 31 }, { connectTimeoutMs: 2 ** 31 }, { idleTimeoutMs: Number.MAX_SAFE_INTEGER }]) {
      const err = await failure(establish(kbs, ['k1'], bad));
      expect([JSON.stringify(bad), (err as SealedTensorsError).code]).toEqual([JSON.stringify(bad), 'ERR_INVALID_ARGUMENT']);
    }
    expect(kbs.requests).toEqual([]);
  });
});

describe('review: receipts as large as the broker signs them', () => {
  // Interop/availability: the broker signs receipts up to 192 KiB (src/broker/receipt.ts
  // MAX_RECEIPT_LENGTH: a receipt lists every model of the key), but the session read response
  // heads with Node's default 16 KiB limit and refused receipts over 16 KiB: a key registered with
  // a hundred or so models could never be released to a session.
  it('a release whose receipt header is 60 KiB is accepted and kept', async () => {
    const dir = tempDir();
    const model = await sealedFile(dir, 'm', TEST_KEY, 'k1');
    const kbs = await broker({ k1: { key: TEST_KEY, models: [model.binding] } });
    const big = `${'a'.repeat(30_000)}.${'b'.repeat(30_000)}.${'c'.repeat(86)}`;
    kbs.override.resource = (req, res, body) => {
      const writeHead = res.writeHead.bind(res) as (status: number, headers: Record<string, unknown>) => unknown;
      (res as unknown as { writeHead: unknown }).writeHead = (status: number, headers: Record<string, unknown>) =>
        writeHead(status, { ...headers, 'sealed-tensors-receipt': big });
      void kbs.standard('resource', req, res, body);
    };
    const session = await establish(kbs, ['k1']);
    try {
      expect(session.info.receipt).toBe(big);
    } finally {
      session.close();
    }
  });
});

describe('review: session closed from inside open()', () => {
  // Careless caller: the `only` predicate runs after open() checked that the session was live; a
  // predicate that closes the session (or anything it calls that does) got a model anyway, outside
  // the session's list (so close() never closed it), holding the key region through its reader
  // (on main before the read-time check, it went on decrypting after session.close()).
  it('an only-predicate that closes the session: open() rejects with ReleasedError and keeps nothing', async () => {
    const dir = tempDir();
    const model = await sealedFile(dir, 'm', TEST_KEY, 'k1');
    const kbs = await broker({ k1: { key: TEST_KEY, models: [model.binding] } });
    const baseline = lockedBytes();
    const session = await establish(kbs, ['k1']);
    let opened: { close(): void } | null = null;
    const err = await failure(
      session
        .open(model.path, {
          only: () => {
            session.close();
            return true;
          },
        })
        .then((m) => (opened = m)),
    );
    if (opened !== null) (opened as { close(): void }).close();
    expect((err as SealedTensorsError | null)?.code).toBe('ERR_RELEASED');
    expect(lockedBytes()).toBe(baseline);
  });
});
