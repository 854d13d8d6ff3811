// One measurement of scaling.js's peakRss(), in a fresh process: runs one native verify, load
// (loadAll into secure memory, released before reading) or seal, then prints VmHWM in KiB.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const a = JSON.parse(process.argv[2]);
const dist = (p) => import(pathToFileURL(join(a.root, 'dist', p)).href);
const { NativeSealedFileReader } = await dist('reader/native-file.js');
const { importKey } = await dist('native/key.js');
const { resolveSealOptions, sealFileResolved } = await dist('seal/seal-file.js');
const dataKey = new Uint8Array(a.dataKey);

if (a.op === 'seal') {
  const o = resolveSealOptions({ dataKey, keyId: 'bench', overwrite: true, threads: a.threads }, undefined, 'native');
  await sealFileResolved(a.plain, a.out, o);
} else {
  const key = importKey(dataKey);
  const r = await NativeSealedFileReader.open(a.sealed, key, { threads: a.threads });
  key.release();
  if (a.op === 'verify') {
    const checks = await r.verify();
    if (!checks.every((c) => c.ok)) throw new Error('verify failed');
  } else {
    (await r.loadAll()).release();
  }
  r.close();
}
console.log(/VmHWM:\s+(\d+)/.exec(readFileSync('/proc/self/status', 'utf8'))[1]);
