// The face bench's released-size tables (bench/face-shapes.ts) against the fixtures: at the tiny fixtures' widths
// each table gives exactly their key names and shapes (so the layout is the reference architecture's), and at the
// released widths the fp32 values fill the released files' sizes up to a few hundred bytes of pickle per tensor.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import {
  CODEFORMER_RELEASE,
  codeformerShapes,
  gfpganShapes,
  parsenetShapes,
  retinafaceResnet50Shapes,
  type ShapeTable,
  valueCount,
} from '../../../bench/face-shapes.ts';
import { openTensorFile } from '../../../src/engine/weights/tensor-file.ts';

const FIX = 'test/fixtures/tiny-faces';

function fileShapes(path: string): ShapeTable {
  const f = openTensorFile(path);
  return new Map(f.names().map((n) => [n, [...f.entry(n).shape]]));
}

function assertSameTable(ours: ShapeTable, reference: ShapeTable, label: string): void {
  assert.deepEqual([...ours.keys()].sort(), [...reference.keys()].sort(), `${label}: key names`);
  for (const [name, shape] of reference) assert.deepEqual(ours.get(name), shape, `${label}: ${name}`);
}

test('face shape tables at the tiny fixtures widths give their exact key lists and shapes', () => {
  assertSameTable(gfpganShapes({ numStyleFeat: 32, narrow: 1 / 16, channelMultiplier: 2, outSize: 512 }), fileShapes(`${FIX}/gfpgan-v1.4-tiny.pth`), 'GFPGAN');
  const tinyFuse = Object.fromEntries(Object.entries(CODEFORMER_RELEASE.fuseChannels).map(([k, v]) => [k, v / 16]));
  assertSameTable(
    codeformerShapes({ ...CODEFORMER_RELEASE, nf: 4, dimEmbd: 32, codebookSize: 64, fuseChannels: tinyFuse }),
    fileShapes(`${FIX}/codeformer-tiny.pth`),
    'CodeFormer',
  );
  assertSameTable(parsenetShapes({ baseCh: 8, chRange: [8, 32] }), fileShapes(`${FIX}/parsenet.safetensors`), 'ParseNet');
  const r50 = JSON.parse(readFileSync(`${FIX}/retinaface-resnet50-keys.json`, 'utf8')).keys as Record<string, number[]>;
  assertSameTable(retinafaceResnet50Shapes(), new Map(Object.entries(r50)), 'RetinaFace ResNet-50');
});

test('face shape tables at the released widths fill the released files (fp32 + < 400 bytes of pickle per tensor)', () => {
  for (const [file, table, bytes] of [
    ['GFPGANv1.4.pth', gfpganShapes(), 348_632_874],
    ['codeformer.pth', codeformerShapes(), 376_637_898],
    ['detection_Resnet50_Final.pth', retinafaceResnet50Shapes(), 109_497_761],
    ['parsing_parsenet.pth', parsenetShapes(), 85_331_193],
  ] as const) {
    const overhead = bytes - valueCount(table) * 4;
    assert.ok(overhead > 0 && overhead < 400 * table.size, `${file}: ${overhead} bytes beyond the fp32 values of ${table.size} tensors`);
  }
  assert.equal(valueCount(gfpganShapes()), 87_143_276);
  assert.equal(valueCount(codeformerShapes()), 94_112_707);
});
