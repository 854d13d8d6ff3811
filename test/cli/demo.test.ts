import { describe, expect, it } from 'vitest';
import { runDemo } from '../../src/demo/demo.js';

describe('demo', () => {
  it('runs end to end: no names leak, verify passes, a flipped bit is rejected', async () => {
    const lines: string[] = [];
    await runDemo({ say: (l) => lines.push(l) });
    const text = lines.join('\n');
    expect(text).toMatch(/tensor names or dtypes found in the sealed bytes: none/);
    expect(text).toMatch(/13 tensors decrypted/);
    expect(text).toMatch(/rejected with ERR_INTEGRITY/);
  });
});
