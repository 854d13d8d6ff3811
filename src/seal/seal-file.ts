import { open, type FileHandle } from 'node:fs/promises';
import { randomBytes as nodeRandomBytes } from 'node:crypto';
import { assertBytes, toHex, wipe } from '../bytes.js';
import { IoError, InvalidArgumentError, SafetensorsError, SealedTensorsError } from '../errors.js';
import {
  BUNDLE_ID_LENGTH,
  DATA_KEY_LENGTH,
  DEFAULT_CHUNK_SIZE,
  FORMAT_VERSION,
  FileKind,
  type FileKindId,
  MAGIC,
  SALT_LENGTH,
  Suite,
  type SuiteId,
  TAG_LENGTH,
  TABLE_LENGTH_PREFIX,
} from '../format/constants.js';
import { encodeHeader, headerLength, validateChunkSize, validateKeyId, type PublicHeader } from '../format/header.js';
import { chunkCount, chunkFileOffset, chunkPlainLength, type Layout } from '../format/layout.js';
import { encodeIndexTable, encodeTensorTable, type IndexTable } from '../format/table.js';
import { padTable, padmeLength, tableBucket } from '../format/padding.js';
import { nodeBackend, type CryptoBackend } from '../crypto/backend.js';
import { TensorDigest } from '../crypto/digest.js';
import { deriveFileKeys } from '../crypto/file-keys.js';
import { TABLE_NONCE, chunkNonce } from '../crypto/stream.js';
import { openRegularFile } from '../regular-file.js';
import { awaitNative, callNative, loadAddon, type NativeAddon, type NativeKeyHandle, type NativeSealer } from '../native/addon.js';
import { availableParallelism } from 'node:os';
import { checkFileOutput, commitFile, partialPath, removePartial } from './output.js';
import { parseHeaderLength, parseSafetensorsHeader, type SafetensorsLayout } from './safetensors.js';

/** What seal expected instead of a FIFO, device or folder. */
export const SAFETENSORS_HINT = 'seal reads a .safetensors file (or a folder of shards with their index)';

export interface SealOptions {
  dataKey: Uint8Array;
  keyId: string;
  suite?: SuiteId;
  chunkSize?: number;
  /** Replace an existing output if it is sealed output (never anything else); without it an existing output is an error. */
  overwrite?: boolean;
  backend?: CryptoBackend;
  /**
   * Pad the payload with zeros to its Padmé length (at most 12% more) so the public payload length
   * no longer gives the exact parameter count, only its rough size (docs/FORMAT.md section 5.3).
   */
  padPayload?: boolean;
  /** Threads for the native sealer (default: every core). */
  threads?: number;
  /**
   * Also compute each tensor's plain SHA-256 (the summary's `tensors`), in the same pass. Off by
   * default: it hashes every byte a second time, which on CPUs whose SHA-256 is slower than their
   * AES-GCM costs about 40 % of the sealing speed.
   */
  tensorSha256?: boolean;
}

/**
 * Which sealer writes the payload: the addon's (plaintext only in locked memory, every core) when it
 * loads and no custom `backend` was given, else the TypeScript one. Both write the same bytes.
 * Internal: tests pin one to compare them; users get `auto`.
 */
export type SealEngine = 'auto' | 'native' | 'typescript';

/**
 * Where salts and bundle ids come from. Not a public option: a constant source would repeat
 * salts, hence (subkey, nonce) pairs, and leak GCM's authentication key. Only the reproducible
 * test vectors pass another source, through the internal `*Resolved` entry points.
 */
export type RandomSource = (n: number) => Uint8Array;
const systemRandom: RandomSource = (n) => new Uint8Array(nodeRandomBytes(n));

export interface ShardPlacement {
  kind: FileKindId;
  shardIndex: number;
  shardCount: number;
  bundleId: Uint8Array;
}

export interface SealedFileSummary {
  path: string;
  header: PublicHeader;
  headerDigest: string;
  /** With `tensorSha256`: each tensor's plain SHA-256 of its bytes (as in the source file), in payload order; absent for an index. */
  tensors?: { name: string; sha256: string }[];
}

export interface ResolvedOptions {
  dataKey: Uint8Array;
  keyId: string;
  suite: SuiteId;
  chunkSize: number;
  overwrite: boolean;
  backend: CryptoBackend;
  padPayload: boolean;
  randomBytes: RandomSource;
  engine: SealEngine;
  threads: number;
  /** SealOptions.tensorSha256. */
  plainSha256: boolean;
}

export function resolveSealOptions(o: SealOptions, randomBytes: RandomSource = systemRandom, engine: SealEngine = 'auto'): ResolvedOptions {
  // A JavaScript caller can still pass it: refuse rather than silently use the CSPRNG instead.
  if (Object.hasOwn(o, 'randomBytes')) {
    throw new InvalidArgumentError('randomBytes is not a seal option: salts and bundle ids always come from the system CSPRNG');
  }
  assertBytes(o.dataKey, 'dataKey', DATA_KEY_LENGTH);
  validateKeyId(o.keyId);
  const suite = o.suite ?? Suite.AES_256_GCM;
  if (suite !== Suite.AES_256_GCM && suite !== Suite.CHACHA20_POLY1305) {
    throw new InvalidArgumentError(`suite must be 1 (AES-256-GCM) or 2 (ChaCha20-Poly1305), got ${String(suite)}`);
  }
  const chunkSize = o.chunkSize ?? DEFAULT_CHUNK_SIZE;
  validateChunkSize(chunkSize);
  const threads = o.threads ?? availableParallelism();
  if (!Number.isInteger(threads) || threads < 1 || threads > 1024) throw new InvalidArgumentError(`threads must be an integer in [1, 1024], got ${String(o.threads)}`);
  return {
    dataKey: o.dataKey,
    keyId: o.keyId,
    suite,
    chunkSize,
    overwrite: o.overwrite ?? false,
    backend: o.backend ?? nodeBackend,
    padPayload: o.padPayload ?? false,
    randomBytes,
    // A caller's own backend means the TypeScript sealer: that is what it asked to run.
    engine: o.backend && engine === 'auto' ? 'typescript' : engine,
    threads,
    plainSha256: o.tensorSha256 ?? false,
  };
}

/** Seal one `.safetensors` file into one sealed model file. */
export async function sealFile(inputPath: string, outputPath: string, options: SealOptions): Promise<SealedFileSummary> {
  return sealFileResolved(inputPath, outputPath, resolveSealOptions(options));
}

/** Internal (not exported by the package): `sealFile` with options already resolved. */
export async function sealFileResolved(inputPath: string, outputPath: string, o: ResolvedOptions): Promise<SealedFileSummary> {
  await checkFileOutput(inputPath, outputPath, o.overwrite);
  const placement: ShardPlacement = {
    kind: FileKind.MODEL,
    shardIndex: 0,
    shardCount: 1,
    bundleId: o.randomBytes(BUNDLE_ID_LENGTH),
  };
  return sealSafetensors(inputPath, outputPath, o, placement);
}

/** Read and validate the safetensors header of an open file. */
export async function readSafetensorsLayout(fh: FileHandle, path: string): Promise<SafetensorsLayout> {
  const { size } = await fh.stat();
  const prefix = await readExactly(fh, 0, Math.min(8, size), path);
  if (prefix.length === MAGIC.length && MAGIC.every((b, i) => prefix[i] === b)) {
    throw new SafetensorsError(`${path} is already sealed, not a safetensors file: seal the original .safetensors`);
  }
  let n: number;
  try {
    n = parseHeaderLength(prefix, size);
  } catch (err) {
    // The length prefix is all a non-safetensors file (text, an archive) ever gets to.
    if (err instanceof SealedTensorsError) err.message = `${path} is not a safetensors file: ${err.message}`;
    throw err;
  }
  try {
    const headerBytes = await readExactly(fh, 8, n, path);
    return parseSafetensorsHeader(headerBytes, size);
  } catch (err) {
    if (err instanceof SealedTensorsError && !err.message.startsWith(path)) err.message = `${path}: ${err.message}`;
    throw err;
  }
}

export async function sealSafetensors(
  inputPath: string,
  outputPath: string,
  o: ResolvedOptions,
  placement: ShardPlacement,
): Promise<SealedFileSummary> {
  const { fh: input } = await openRegularFile(inputPath, SAFETENSORS_HINT);
  try {
    const st = await readSafetensorsLayout(input, inputPath);
    const payloadLength = o.padPayload ? padmeLength(st.dataLength) : st.dataLength;
    return await writeSealedFile(outputPath, o, placement, payloadLength, {
      tableFor: (digests) =>
        encodeTensorTable({
          tensors: st.tensors.map((t, i) => ({ ...t, digest: digests[i]! })),
          metadata: st.metadata,
          payloadPadding: payloadLength - st.dataLength,
        }),
      tensors: st.tensors,
      input: { fd: input.fd, path: inputPath, dataStart: st.dataStart, dataLength: st.dataLength },
      readPayload: async (offset, into) => {
        // Past the tensor data the payload is zero padding.
        const fromFile = Math.max(0, Math.min(into.length, st.dataLength - offset));
        if (fromFile > 0) await readInto(input, st.dataStart + offset, into.subarray(0, fromFile), inputPath);
        into.fill(0, fromFile);
      },
    });
  } finally {
    await input.close();
  }
}

/** Seal an index file (kind 3): no payload, the table carries the shard list. */
export async function sealIndexFile(
  outputPath: string,
  o: ResolvedOptions,
  placement: ShardPlacement,
  table: IndexTable,
): Promise<SealedFileSummary> {
  // A fresh encoding per call: the sealer wipes each table plaintext it is given.
  return writeSealedFile(outputPath, o, placement, 0, { tableFor: () => encodeIndexTable(table), tensors: [], readPayload: async () => {} });
}

interface PayloadPlan {
  /** Table JSON given the tensors' digests (hex), before padding; its length must not depend on their values. */
  tableFor(digests: string[]): Uint8Array; // a fresh buffer each call: the sealer wipes it
  tensors: { name: string; begin: number; end: number }[];
  /** The open safetensors input (its descriptor stays open until the seal ends), for the native sealer. */
  input?: { fd: number; path: string; dataStart: number; dataLength: number };
  readPayload(offset: number, into: Uint8Array): Promise<void>;
}

/** The addon when this seal runs natively, else null (TypeScript sealer). */
function nativeSealer(o: ResolvedOptions): NativeAddon | null {
  if (o.engine === 'typescript') return null;
  if (o.engine === 'native') return loadAddon();
  try {
    const addon = loadAddon();
    return typeof addon.sealBegin === 'function' ? addon : null;
  } catch {
    return null;
  }
}

/** A key handle over a copy of the caller's data key (theirs is left as it is; the copy is wiped by the import). */
function importKeyCopy(addon: NativeAddon, dataKey: Uint8Array): NativeKeyHandle {
  const own = new Uint8Array(new ArrayBuffer(DATA_KEY_LENGTH)); // an ArrayBuffer's bytes are never on the V8 heap
  try {
    own.set(dataKey);
    return callNative(() => addon.keyImport(own));
  } finally {
    own.fill(0);
  }
}

async function writeSealedFile(
  outputPath: string,
  o: ResolvedOptions,
  placement: ShardPlacement,
  payloadLength: number,
  plan: PayloadPlan,
): Promise<SealedFileSummary> {
  // The table's names and shapes are secret too: its plaintext is wiped, not left to the GC.
  const placeholderTable = plan.tableFor(plan.tensors.map(() => '0'.repeat(64)));
  const tableLength = tableBucket(TABLE_LENGTH_PREFIX + placeholderTable.length) + TAG_LENGTH;
  wipe(placeholderTable);

  const salt = o.randomBytes(SALT_LENGTH);
  const addon = nativeSealer(o);
  if (addon) return writeSealedFileNative(addon, outputPath, o, placement, payloadLength, plan, tableLength, salt);
  const keys = deriveFileKeys(o.backend, o.dataKey, { version: FORMAT_VERSION, suite: o.suite, kind: placement.kind, salt });
  // A copy of the commitment: keys.destroy() wipes keys.commitment, and the summary hands this header out.
  const header = publicHeaderFor(o, placement, tableLength, payloadLength, salt, keys.commitment.slice());
  const headerBytes = encodeHeader(header);
  const headerDigest = o.backend.sha256().update(headerBytes).digest();
  const layout: Layout = { headerLength: headerLength(o.keyId), tableLength, chunkSize: o.chunkSize, payloadLength };

  const tempPath = partialPath(outputPath);
  const out = await openOrThrow(tempPath, 'wx');
  // Two plaintext buffers: chunk i+1 is read while chunk i is hashed and encrypted, and the
  // write of chunk i overlaps the work on chunk i+1. Memory stays at a few chunks.
  const bufferSize = Math.min(o.chunkSize, payloadLength);
  const plainBuffers = [new Uint8Array(bufferSize), new Uint8Array(bufferSize)] as const;
  let pendingWrite: Promise<void> = Promise.resolve();
  try {
    const digests = plan.tensors.map(() => new TensorDigest(o.backend));
    const plainDigests = o.plainSha256 ? plan.tensors.map(() => o.backend.sha256()) : null;
    const count = chunkCount(payloadLength, o.chunkSize);
    const readChunk = async (i: number): Promise<Uint8Array> => {
      const plain = plainBuffers[i % 2]!.subarray(0, chunkPlainLength(layout, i));
      await plan.readPayload(i * o.chunkSize, plain);
      return plain;
    };
    let nextRead = readChunk(0);
    let t = 0; // first tensor that may still have bytes in this or later chunks
    for (let i = 0; i < count; i++) {
      const plain = await nextRead;
      if (i + 1 < count) {
        nextRead = readChunk(i + 1);
        nextRead.catch(() => {}); // awaited next round; don't report it unhandled if this round fails
      }
      const start = i * o.chunkSize;
      const len = plain.length;
      // Hash each tensor's leaf inside this chunk while the bytes are at hand.
      while (t < plan.tensors.length && plan.tensors[t]!.end <= start) t++;
      for (let k = t; k < plan.tensors.length; k++) {
        const tensor = plan.tensors[k]!;
        if (tensor.begin >= start + len) break;
        const a = Math.max(tensor.begin, start);
        const b = Math.min(tensor.end, start + len);
        if (b > a) {
          digests[k]!.update(plain.subarray(a - start, b - start));
          digests[k]!.endLeaf();
          plainDigests?.[k]!.update(plain.subarray(a - start, b - start));
        }
      }
      const sealed = o.backend.aeadSeal(o.suite, keys.payloadKey, chunkNonce(i, i === count - 1), headerDigest, plain);
      await pendingWrite;
      pendingWrite = writeAll(out, sealed, chunkFileOffset(layout, i), tempPath);
    }
    await pendingWrite;
    const tableJson = plan.tableFor(digests.map((d) => d.digestHex()));
    const tablePlain = padTable(tableJson);
    let sealedTable: Uint8Array;
    try {
      if (tablePlain.length + TAG_LENGTH !== tableLength) throw new Error('table length changed after hashing (sealer bug)');
      sealedTable = o.backend.aeadSeal(o.suite, keys.tableKey, TABLE_NONCE, headerDigest, tablePlain);
    } finally {
      wipe(tableJson, tablePlain);
    }
    await writeAll(out, headerBytes, 0, tempPath);
    await writeAll(out, sealedTable, layout.headerLength, tempPath);
    await out.sync();
    await out.close();
    await commitFile(tempPath, outputPath, o.overwrite);
    return { path: outputPath, header, headerDigest: toHex(headerDigest), ...(plainDigests ? tensorShas(plan, plainDigests.map((d) => d.digest())) : {}) };
  } catch (err) {
    await pendingWrite.catch(() => {});
    await out.close().catch(() => {});
    await removePartial(tempPath);
    throw err;
  } finally {
    keys.destroy();
    wipe(...plainBuffers);
  }
}

function tensorShas(plan: PayloadPlan, shas: Uint8Array[]): Pick<SealedFileSummary, 'tensors'> {
  if (!plan.input) return {};
  return { tensors: plan.tensors.map((t, i) => ({ name: t.name, sha256: toHex(shas[i]!) })) };
}

/** The public header of one sealed file; both sealers fill it alike (the native one commits later). */
function publicHeaderFor(
  o: { suite: PublicHeader['suite']; chunkSize: number; keyId: string },
  placement: { kind: PublicHeader['kind']; shardIndex: number; shardCount: number; bundleId: Uint8Array },
  tableLength: number,
  payloadLength: number,
  salt: Uint8Array,
  keyCommitment: Uint8Array,
): PublicHeader {
  return {
    version: FORMAT_VERSION,
    suite: o.suite,
    kind: placement.kind,
    chunkSize: o.chunkSize,
    shardIndex: placement.shardIndex,
    shardCount: placement.shardCount,
    tableLength,
    payloadLength,
    bundleId: placement.bundleId,
    salt,
    keyCommitment,
    keyId: o.keyId,
  };
}

/**
 * The same file as writeSealedFile, written by the addon: the data key goes into a key handle and
 * the subkeys are derived there; plaintext is read into locked memory, encrypted and hashed on every
 * core, and each chunk written at its final offset; then the table and header, fsync, rename.
 */
async function writeSealedFileNative(
  addon: NativeAddon,
  outputPath: string,
  o: ResolvedOptions,
  placement: ShardPlacement,
  payloadLength: number,
  plan: PayloadPlan,
  tableLength: number,
  salt: Uint8Array,
): Promise<SealedFileSummary> {
  // The commitment is filled in by the addon: the JS side never holds a subkey.
  const header = publicHeaderFor(o, placement, tableLength, payloadLength, salt, new Uint8Array(32));
  const template = encodeHeader(header);
  const tempPath = partialPath(outputPath);
  const out = await openOrThrow(tempPath, 'wx');
  let sealer: NativeSealer | null = null;
  try {
    const ranges = new Float64Array(plan.tensors.length * 2);
    plan.tensors.forEach((t, i) => ranges.set([t.begin, t.end], 2 * i));
    const key = importKeyCopy(addon, o.dataKey); // last before the try that releases it
    try {
      sealer = callNative(() =>
        addon.sealBegin({
          key,
          header: template,
          // An index has no payload to read: its "input" is never read (dataLength 0).
          input: plan.input?.fd ?? out.fd,
          inputPath: plan.input?.path ?? outputPath,
          dataStart: plan.input?.dataStart ?? 0,
          dataLength: plan.input?.dataLength ?? 0,
          output: out.fd,
          outputPath: tempPath,
          ranges,
          threads: o.threads,
          plainSha256: o.plainSha256 && plan.input !== undefined,
        }),
      );
    } finally {
      key.release();
    }
    const s = sealer;
    const headerBytes = s.header;
    // Checked before anything is written or committed: an output whose header is not the one asked for must never land.
    header.keyCommitment = new Uint8Array(headerBytes.subarray(88, 120));
    if (Buffer.compare(encodeHeader(header), headerBytes) !== 0) throw new Error('the addon changed more of the header than its key commitment (sealer bug)');
    const { digests, sha256 } = await awaitNative(callNative(() => s.payload()));
    const tableJson = plan.tableFor(plan.tensors.map((_, i) => toHex(digests.subarray(32 * i, 32 * i + 32))));
    const tablePlain = padTable(tableJson);
    try {
      if (tablePlain.length + TAG_LENGTH !== tableLength) throw new Error('table length changed after hashing (sealer bug)');
      await awaitNative(callNative(() => s.finish(tablePlain)));
    } finally {
      wipe(tableJson, tablePlain);
    }
    await out.sync();
    await out.close();
    await commitFile(tempPath, outputPath, o.overwrite);
    const headerDigest = o.backend.sha256().update(headerBytes).digest();
    const shas = sha256 ? plan.tensors.map((_, i) => sha256.subarray(32 * i, 32 * i + 32)) : null;
    return { path: outputPath, header, headerDigest: toHex(headerDigest), ...(shas ? tensorShas(plan, shas) : {}) };
  } catch (err) {
    await out.close().catch(() => {});
    await removePartial(tempPath);
    throw err;
  } finally {
    sealer?.abort();
  }
}

export async function openOrThrow(path: string, flags: string): Promise<FileHandle> {
  try {
    return await open(path, flags, 0o644);
  } catch (cause) {
    const e = cause as NodeJS.ErrnoException;
    throw new IoError(`cannot open ${path} (${e.code ?? e.message}): check the path and permissions`, { cause });
  }
}

async function readExactly(fh: FileHandle, position: number, length: number, path: string): Promise<Uint8Array> {
  const buf = new Uint8Array(length);
  await readInto(fh, position, buf, path);
  return buf;
}

async function readInto(fh: FileHandle, position: number, into: Uint8Array, path: string): Promise<void> {
  let done = 0;
  while (done < into.length) {
    const { bytesRead } = await fh.read(into, done, into.length - done, position + done);
    if (bytesRead === 0) throw new SafetensorsError(`${path} ended early at byte ${position + done}: was it modified while sealing?`);
    done += bytesRead;
  }
}

async function writeAll(fh: FileHandle, data: Uint8Array, position: number, path: string): Promise<void> {
  let done = 0;
  while (done < data.length) {
    const { bytesWritten } = await fh.write(data, done, data.length - done, position + done).catch((cause) => {
      throw new IoError(`writing ${path} failed: ${cause.message}`, { cause });
    });
    done += bytesWritten;
  }
}
