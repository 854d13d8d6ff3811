import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { writeSafetensors, type TensorSpec } from './safetensors.js';

/** A three-shard model with its index under `dir/name`; `seed` changes one shape so two models differ. */
export function makeShardedModel(dir: string, name: string, seed = 0): { path: string; data: Map<string, Uint8Array> } {
  const path = join(dir, name);
  mkdirSync(path);
  const shards: TensorSpec[][] = [
    [{ name: 'model.embed', dtype: 'F16', shape: [64, 33 + seed] }, { name: 'model.norm', dtype: 'F32', shape: [64] }],
    [{ name: 'layers.0.w', dtype: 'BF16', shape: [3000] }],
    [{ name: 'lm_head', dtype: 'I8', shape: [5000] }, { name: 'flag', dtype: 'BOOL', shape: [] }],
  ];
  const data = new Map<string, Uint8Array>();
  const weightMap: Record<string, string> = {};
  shards.forEach((tensors, i) => {
    const file = `model-0000${i + 1}-of-00003.safetensors`;
    for (const [k, v] of writeSafetensors(join(path, file), tensors, { format: 'pt' })) data.set(k, v);
    for (const t of tensors) weightMap[t.name] = file;
  });
  writeFileSync(join(path, 'model.safetensors.index.json'), JSON.stringify({ metadata: { total_size: 12345 }, weight_map: weightMap }));
  return { path, data };
}
