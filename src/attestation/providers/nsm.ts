import { decode as cborDecode, encode as cborEncode } from 'cborg';
import { EvidenceFormatError, IoError } from '../../errors.js';
import { assertBytes } from '../../bytes.js';
import type { EvidenceProvider } from './types.js';
import { callIoctl, loadTeeIoctls, type IoctlLoader } from './native-ioctl.js';

/**
 * The NSM request for an attestation document whose `nonce` is our 64 report-data bytes (the KBS
 * binding, docs/PROTOCOL.md: the broker reads it from the nonce, nowhere else).
 */
export function nsmAttestationRequest(reportData: Uint8Array): Uint8Array {
  return cborEncode({ Attestation: { user_data: null, nonce: reportData, public_key: null } });
}

/** Pulls the document out of an NSM response: {"Attestation": {"document": bstr}} or {"Error": "..."}. */
export function nsmAttestationDocument(response: Uint8Array): Uint8Array {
  let r: unknown;
  try {
    r = cborDecode(response);
  } catch (err) {
    throw new EvidenceFormatError(`NSM response is not CBOR: ${(err as Error).message}`, { cause: err });
  }
  const obj = r as { Attestation?: { document?: unknown }; Error?: unknown } | null;
  if (obj && typeof obj === 'object' && obj.Error !== undefined) throw new IoError(`NSM refused the attestation request: ${String(obj.Error)}`);
  const doc = obj?.Attestation?.document;
  if (!(doc instanceof Uint8Array)) throw new EvidenceFormatError('NSM response has no Attestation.document byte string');
  return doc;
}

/** Nitro Enclaves evidence through /dev/nsm. The 64 report-data bytes go in the document's nonce. */
export class NitroNsmProvider implements EvidenceProvider {
  readonly tee = 'nitro' as const;
  constructor(private readonly load: IoctlLoader = loadTeeIoctls) {}

  async getEvidence(reportData: Uint8Array): Promise<Uint8Array> {
    assertBytes(reportData, 'reportData', 64);
    const response = await callIoctl('/dev/nsm', this.load, (io) => io.teeNsmRequest(nsmAttestationRequest(reportData)));
    return nsmAttestationDocument(response);
  }
}
