// LoRA branches as graph inputs (nets/lora-branch.ts, weights/lora/branch-factors.ts): the branch graph fed with
// rank-0 factors gives the plain UNet's output bit for bit (the text encoder's within rounding); fed with LoRA factors it matches the merged weights
// (kohya with LoCon convs, PEFT, diffusers, several LoRAs concatenated along the rank, negative weights), for the
// UNet and the text encoder; tiled (seamless) UNets too.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { LoraSettings } from '../../../src/engine/api.ts';
import { ModelSessions } from '../../../src/engine/pipelines/model-sessions.ts';
import { runSession, withExtraInputs, type Feed } from '../../../src/engine/runtime.ts';
import type { Tensor } from '../../../src/engine/tensor.ts';
import { branchFeeds } from '../../../src/engine/weights/lora/index.ts';

const FIX = 'test/fixtures';
const cacheDir = mkdtempSync(join(tmpdir(), 'kiln-lora-branches-'));
const sd1 = await ModelSessions.load({ path: `${FIX}/tiny-sd1` }, { device: 'cpu', cacheDir, cacheOptimized: false });
after(async () => {
  await sd1.release();
  rmSync(cacheDir, { recursive: true, force: true });
});

const lora = (file: string, te: number, unet: number): LoraSettings => ({ name: file, path: `${FIX}/loras/${file}.safetensors`, te, unet });

function random(shape: number[], seed: number): Tensor {
  const data = new Float32Array(shape.reduce((a, b) => a * b, 1));
  let s = seed;
  for (let i = 0; i < data.length; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    data[i] = s / 2 ** 32 - 0.5;
  }
  return { shape, data };
}

const unetFeeds: Record<string, Feed> = {
  sample: random([2, 4, 8, 8], 1),
  timestep: { shape: [2], data: Float32Array.from([500, 500]) },
  encoder_hidden_states: random([2, 77, 32], 2),
};
const { bos, eos } = sd1.tokenizer(0);
const ids: Record<string, Feed> = {
  input_ids: { int64: BigInt64Array.from({ length: 77 }, (_, i) => BigInt(i === 0 ? bos : i < 6 ? 320 + i : eos)), shape: [1, 77] },
};

function maxDiff(a: Float32Array, b: Float32Array): { abs: number; scale: number } {
  let abs = 0;
  let scale = 0;
  for (let i = 0; i < a.length; i++) {
    abs = Math.max(abs, Math.abs(a[i]! - b[i]!));
    scale = Math.max(scale, Math.abs(b[i]!));
  }
  return { abs, scale };
}

test('the branch graph with rank-0 factors gives the plain UNet output bit for bit (the text encoder within float rounding)', async () => {
  const view = sd1.withAdapters([lora('tiny-sd1-kohya', 1, 1)]);
  for (const tiling of [undefined, 'xy'] as const) {
    const branch = await view.unet(tiling);
    assert.ok(
      branch.inputNames.some((n) => n.startsWith('lora_down:')),
      'the LoRA view runs the branch graph',
    );
    // The same native session, fed with no LoRA at all.
    const rank0 = withExtraInputs(branch, (inputs) => branchFeeds(inputs, new Map()));
    const plain = (await runSession(await sd1.unet(tiling), unetFeeds)).out!;
    const zero = (await runSession(rank0, unetFeeds)).out!;
    assert.deepEqual(zero.data, plain.data, `UNet (tiling ${tiling ?? 'none'})`);
  }
  const te = await view.textEncoder(0, {});
  const teRank0 = withExtraInputs(te, (inputs) => branchFeeds(inputs, new Map()));
  // onnxruntime fuses the text encoder's bias and residual adds differently around the branch Add (a few ULPs);
  // only a text encoder that a LoRA patches runs its branch graph, so plain jobs never see this.
  const d = maxDiff((await runSession(teRank0, ids)).hidden!.data, (await runSession(await sd1.textEncoder(0, {}), ids)).hidden!.data);
  assert.ok(d.abs <= 1e-6 * Math.max(1, d.scale), `text encoder: max |rank 0 - plain| ${d.abs}`);
});

const combinations: Array<[string, LoraSettings[]]> = [
  ['kohya with LoCon', [lora('tiny-sd1-kohya', 0.7, 0.8)]],
  ['PEFT', [lora('tiny-sd1-peft', 1, 1)]],
  ['diffusers', [lora('tiny-sd1-diffusers', 1, 1)]],
  [
    'kohya + PEFT (negative) + diffusers, concatenated along the rank',
    [lora('tiny-sd1-kohya', 0.5, 0.6), lora('tiny-sd1-peft', -0.8, -0.7), lora('tiny-sd1-diffusers', 0.4, 1.2)],
  ],
  ['kohya branches + LoHa merged', [lora('tiny-sd1-kohya', 0.7, 0.7), lora('tiny-sd1-loha', 0.7, 0.7)]],
];

for (const [label, loras] of combinations) {
  test(`branches match the merged weights: ${label}`, async () => {
    const branched = sd1.withAdapters(loras);
    const merged = sd1.withAdapters(loras, [], { merge: true });
    assert.ok(branched.loras?.unetBranches, 'the UNet has branches');
    assert.equal(merged.loras?.unetBranches, undefined);
    for (const tiling of [undefined, 'x'] as const) {
      const b = (await runSession(await branched.unet(tiling), unetFeeds)).out!;
      const m = (await runSession(await merged.unet(tiling), unetFeeds)).out!;
      const plain = (await runSession(await sd1.unet(tiling), unetFeeds)).out!;
      const d = maxDiff(b.data, m.data);
      assert.ok(d.abs <= 1e-5 * Math.max(1, d.scale), `UNet (tiling ${tiling ?? 'none'}): max |branch - merged| ${d.abs}`);
      assert.ok(maxDiff(b.data, plain.data).abs > 1e-3, 'the LoRA changes the output');
    }
    const tb = (await runSession(await branched.textEncoder(0, {}), ids)).hidden!;
    const tm = (await runSession(await merged.textEncoder(0, {}), ids)).hidden!;
    const d = maxDiff(tb.data, tm.data);
    assert.ok(d.abs <= 1e-5 * Math.max(1, d.scale), `text encoder: max |branch - merged| ${d.abs}`);
  });
}
