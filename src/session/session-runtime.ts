// What EnclaveSession needs once it runs (establish, open), imported on first use by
// enclave-session.ts so that importing the package does not load the KBS client, the broker-key
// checks (jose), the evidence codecs or the native reader.
export { kbsReportData } from '../protocol/binding.js';
export { parsePublicJwk } from '../protocol/jwk.js';
export { DATA_KEY_REPOSITORY, DATA_KEY_TYPE } from '../protocol/messages.js';
export { manifestAllows, parseManifest } from '../protocol/resource.js';
export { DEVICE_SUBMOD, teePubkeyOfToken } from '../protocol/token.js';
export { NativeSealedModelReader } from '../reader/native-model.js';
export { resolveSealedModelPath } from '../reader/model-binding.js';
export { checkSelection } from '../reader/native-file.js';
export { readPublicHeader } from '../reader/public-header.js';
export { generateEphemeralKey, unwrapDataKey } from './ephemeral.js';
export { jwkThumbprint, pinBrokerKeys, verifyBrokerToken, verifyReleaseReceipt } from './broker-trust.js';
export { checkBrokerTransport, RcarClient } from './rcar-client.js';
export { gatherTeeEvidence, sessionTeeName } from './tee-evidence.js';
export { checkDeviceProviders, gatherDeviceEvidence } from './device-evidence.js';
