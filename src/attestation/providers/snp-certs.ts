import { EvidenceFormatError } from '../../errors.js';
import { ByteReader } from '../bin.js';

/** GUIDs of the SNP extended-report certificate table (GHCB spec, "SNP Extended Guest Request"). */
export const SNP_CERT_GUIDS: Record<string, string> = {
  '63da758d-e664-4564-adc5-f4b93be8accd': 'VCEK',
  'a8074bc2-a25a-483e-aae6-39c045a0b8a1': 'VLEK',
  '4ab7b379-bbac-4fe4-a02f-05aef327c782': 'ASK',
  'c0b406a4-a803-4952-9743-3fb6014cd0ae': 'ARK',
};

function guidText(b: Uint8Array): string {
  // GUIDs are stored mixed-endian: the first three fields little-endian.
  const h = Buffer.from(b).toString('hex');
  const le = (s: string): string => s.match(/../g)!.reverse().join('');
  return `${le(h.slice(0, 8))}-${le(h.slice(8, 12))}-${le(h.slice(12, 16))}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/**
 * Splits the host-supplied certificate table (configfs-tsm auxblob, SNP_GET_EXT_REPORT) into
 * DER certificates by name. Entries: GUID (16), offset (u32), length (u32); an all-zero entry ends it.
 */
export function parseSnpCertTable(table: Uint8Array): { name: string; guid: string; der: Uint8Array }[] {
  const r = new ByteReader(table, 'SNP certificate table');
  const out: { name: string; guid: string; der: Uint8Array }[] = [];
  for (let i = 0; i < 64; i++) {
    const guid = r.bytesOf(16, `entry ${i} GUID`);
    const offset = r.u32(`entry ${i} offset`);
    const length = r.u32(`entry ${i} length`);
    if (guid.every((b) => b === 0) && offset === 0 && length === 0) return out;
    if (offset + length > table.length) {
      throw new EvidenceFormatError(`SNP certificate table entry ${i} (offset ${offset}, length ${length}) runs past the ${table.length}-byte table`);
    }
    const g = guidText(guid);
    out.push({ name: SNP_CERT_GUIDS[g] ?? 'unknown', guid: g, der: table.slice(offset, offset + length) });
  }
  throw new EvidenceFormatError('SNP certificate table has more than 64 entries or no terminating entry');
}
