/**
 * Reads a committed vector using nothing but node:crypto and docs/FORMAT.md: no import from src/.
 * If the library and the spec ever disagree, this test and vectors.test.ts cannot both pass.
 */
import { createDecipheriv, createHash, hkdfSync } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

const VECTORS = new URL('../vectors/format/', import.meta.url).pathname;
const manifest = JSON.parse(readFileSync(join(VECTORS, 'manifest.json'), 'utf8'));
const sha256 = (...parts: Uint8Array[]) => {
  const h = createHash('sha256');
  for (const p of parts) h.update(p);
  return h.digest();
};

describe('FORMAT.md, implemented from the text alone', () => {
  it('opens aes-256-gcm.sealed to the manifest tensors', () => {
    const file = readFileSync(join(VECTORS, 'aes-256-gcm.sealed'));
    const key = Buffer.from(manifest.keys.key, 'hex');
    // Section 3: the public header.
    expect([...file.subarray(0, 8)]).toEqual([0x89, 0x53, 0x54, 0x53, 0x0d, 0x0a, 0x1a, 0x0a]);
    expect(file.readUInt16LE(8)).toBe(1);
    expect(file.readUInt16LE(10)).toBe(1);
    expect(file[12]).toBe(1);
    const k = file[13]!;
    const chunkSize = file.readUInt32LE(16);
    const tableLength = file.readUInt32LE(28);
    const payloadLength = Number(file.readBigUInt64LE(32));
    const salt = file.subarray(56, 88);
    const headerLength = 120 + k;
    const headerDigest = sha256(file.subarray(0, headerLength));
    const chunkCount = Math.max(1, Math.ceil(payloadLength / chunkSize));
    // Section 2: exact length.
    expect(file.length).toBe(headerLength + tableLength + payloadLength + 16 * chunkCount);
    // Section 4: subkeys and commitment, bound to version 1, suite 1, kind 1.
    const expand = (purpose: string) => Buffer.from(hkdfSync('sha256', key, salt, Buffer.from(`sealed-tensors/v1 suite 1 kind 1 ${purpose}`), 32));
    expect(expand('key commitment').equals(file.subarray(88, 120))).toBe(true);
    const open = (k32: Buffer, nonce: Buffer, sealed: Buffer) => {
      const d = createDecipheriv('aes-256-gcm', k32, nonce);
      d.setAAD(headerDigest);
      d.setAuthTag(sealed.subarray(sealed.length - 16));
      return Buffer.concat([d.update(sealed.subarray(0, sealed.length - 16)), d.final()]);
    };
    // Section 5.1: table, padded to a power of two from 4 KiB: u32le(n) || JSON || zeros.
    const padded = open(expand('table key'), Buffer.alloc(12), file.subarray(headerLength, headerLength + tableLength));
    expect(padded.length).toBe(tableLength - 16);
    expect(padded.length >= 4096 && (padded.length & (padded.length - 1)) === 0).toBe(true);
    const jsonLength = padded.readUInt32LE(0);
    expect(padded.subarray(4 + jsonLength).every((b) => b === 0)).toBe(true);
    const table = JSON.parse(padded.subarray(4, 4 + jsonLength).toString('utf8'));
    expect(table.payload_padding).toBe(0);
    // Section 5.2: payload chunks.
    const payloadKey = expand('payload key');
    const chunks: Buffer[] = [];
    for (let i = 0; i < chunkCount; i++) {
      const nonce = Buffer.alloc(12);
      nonce.writeBigUInt64BE(BigInt(i), 3);
      nonce[11] = i === chunkCount - 1 ? 1 : 0;
      const start = headerLength + tableLength + i * (chunkSize + 16);
      const plainLength = Math.min(chunkSize, payloadLength - i * chunkSize);
      chunks.push(open(payloadKey, nonce, file.subarray(start, start + plainLength + 16)));
    }
    const payload = Buffer.concat(chunks);
    // Sections 6 and 7: tensors, offsets, tree digests.
    const got = table.tensors.map((t: { name: string; dtype: string; shape: number[]; offsets: [number, number]; digest: string }) => {
      const bytes = payload.subarray(t.offsets[0], t.offsets[1]);
      const leaves: Buffer[] = [];
      for (let c = Math.floor(t.offsets[0] / chunkSize); c * chunkSize < t.offsets[1]; c++) {
        const a = Math.max(t.offsets[0], c * chunkSize);
        const b = Math.min(t.offsets[1], (c + 1) * chunkSize);
        if (b > a) leaves.push(sha256(Uint8Array.of(0), payload.subarray(a, b)));
      }
      const len = Buffer.alloc(8);
      len.writeBigUInt64LE(BigInt(bytes.length));
      expect(sha256(Uint8Array.of(1), len, ...leaves).toString('hex')).toBe(t.digest);
      return { name: t.name, dtype: t.dtype, shape: t.shape, byteLength: bytes.length, sha256: sha256(bytes).toString('hex') };
    });
    expect(got).toEqual(manifest.vectors.find((v: { file: string }) => v.file === 'aes-256-gcm.sealed').tensors);
    expect(table.metadata).toEqual({ format: 'pt', source: 'sealed-tensors test vector' });
  });
});
