import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Command } from 'commander';
import { IoError, NotFoundError } from '../errors.js';
import { readKeyFile } from '../keys/key-file.js';
import { wipe, toHex } from '../bytes.js';
import { FILE_KIND_NAMES, SUITE_NAMES } from '../format/constants.js';
import { readPublicHeader } from '../reader/public-header.js';
import type { SealedModelReader } from '../reader/sealed-model.js';
import { FileSource } from '../reader/source.js';
import { nodeBackend } from '../crypto/backend.js';
import type { CommandContext } from './main.js';
import { formatBytes } from './options.js';
import { writeJson } from './io.js';

/** What `inspect` prints without a key: the public header only, never a tensor name. */
export async function publicView(path: string): Promise<Record<string, unknown>> {
  const source = await FileSource.open(path);
  try {
    const { header: h, headerBytes, layout } = await readPublicHeader(source);
    return {
      file: path,
      fileSize: source.size,
      version: h.version,
      suite: SUITE_NAMES[h.suite],
      kind: FILE_KIND_NAMES[h.kind],
      keyId: h.keyId,
      chunkSize: h.chunkSize,
      shardIndex: h.shardIndex,
      shardCount: h.shardCount,
      payloadLength: h.payloadLength,
      tableLength: h.tableLength,
      headerLength: layout.headerLength,
      bundleId: toHex(h.bundleId),
      salt: toHex(h.salt),
      keyCommitment: toHex(h.keyCommitment),
      headerDigest: toHex(nodeBackend.sha256().update(headerBytes).digest()),
    };
  } finally {
    await source.close();
  }
}

export function registerInspect(program: Command, ctx: CommandContext): void {
  program
    .command('inspect')
    .description('Show a sealed file\'s public header (no key needed, no tensor names), or with --key its full tensor table.')
    .argument('<SEALED>', 'sealed file, sealed index, or sealed model folder')
    .option('--key <KEY>', 'data key file: decrypt and show the tensor table')
    .option('--json', 'print JSON')
    .action(async (path: string, opts: { key?: string; json?: boolean }) => {
      const info = await stat(path).catch((cause) => {
        throw new IoError(`cannot read ${path} (${cause.code ?? cause.message})`, { cause });
      });
      const files = info.isDirectory()
        ? (await readdir(path)).filter((n) => n.endsWith('.sealed')).sort().map((n) => join(path, n))
        : [path];
      const headers = [];
      try {
        if (files.length === 0) {
          throw new NotFoundError(`${path} holds no sealed file (*.sealed): pass a sealed model file or a sealed model folder`);
        }
        for (const f of files) headers.push(await publicView(f));
      } catch (err) {
        throw await (await import('./not-sealed.js')).explainNotSealed(path, err); // only when something failed
      }
      if (!opts.key) {
        if (opts.json) writeJson(ctx.io, { files: headers });
        else for (const h of headers) ctx.io.stdout(formatHeader(h));
        return;
      }
      const key = await readKeyFile(opts.key);
      let model: SealedModelReader;
      try {
        // The reference reader only with --key: a plain inspect reads the public header alone.
        const { SealedModelReader } = await import('../reader/sealed-model.js');
        model = await SealedModelReader.open(path, key.key);
      } finally {
        wipe(key.key);
      }
      try {
        const tensors = model.tensors().map((t) => ({
          name: t.name,
          dtype: t.dtype,
          shape: t.shape,
          byteLength: t.byteLength,
          offsets: [t.begin, t.end],
          digest: t.digest,
          file: t.file,
        }));
        const metadata = model.files.map((f) => f.metadata);
        const index = model.index?.indexTable ?? null;
        if (opts.json) {
          writeJson(ctx.io, { files: headers, tensors, metadata: metadata.length === 1 ? metadata[0] : metadata, index });
        } else {
          for (const h of headers) ctx.io.stdout(formatHeader(h));
          ctx.io.stdout(`\n${tensors.length} tensors:\n`);
          for (const t of tensors) {
            ctx.io.stdout(`  ${t.name}  ${t.dtype}${JSON.stringify(t.shape)}  ${formatBytes(t.byteLength)}${model.sharded ? `  (${t.file})` : ''}\n`);
          }
        }
      } finally {
        await model.close();
      }
    });
}

function formatHeader(h: Record<string, unknown>): string {
  return [
    `${h['file']}: sealed-tensors v${h['version']} ${h['kind']}${h['kind'] === 'shard' ? ` ${Number(h['shardIndex']) + 1}/${h['shardCount']}` : ''}`,
    `  suite        ${h['suite']}`,
    `  key id       ${h['keyId']}`,
    `  payload      ${formatBytes(Number(h['payloadLength']))} in chunks of ${formatBytes(Number(h['chunkSize']))}`,
    `  file size    ${h['fileSize']} bytes`,
    `  bundle id    ${h['bundleId']}`,
    `  header sha256 ${h['headerDigest']}`,
    '',
  ].join('\n');
}
