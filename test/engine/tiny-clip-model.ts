// A tiny full CLIP model (transformers CLIPModel folder) for the interrogator tests, built from the fixtures: the
// vision tower of tiny-clip-vision (checked against transformers in nets/clip-vision.test.ts), the text tower of
// tiny-sd1's text encoder (checked in nets/clip-text.test.ts), and a text_projection [16, 32] from a seeded
// generator, so both towers project into the same 16-wide space. The tokenizer is tiny-sd1's.
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { SafetensorsFile, writeSafetensors, type TensorToWrite } from '../../src/engine/weights/safetensors.ts';
import { FIXTURES } from './nets/fixture-io.ts';

/** A deterministic pseudo-normal generator (mulberry32 + Box-Muller). */
function gaussian(seed: number): () => number {
  let a = seed >>> 0;
  const uniform = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return () => Math.sqrt(-2 * Math.log(1 - uniform())) * Math.cos(2 * Math.PI * uniform());
}

/** Writes the folder `dir` (config.json, model.safetensors, preprocessor_config.json, tokenizer files); returns it. */
export function writeTinyClipModel(dir: string): string {
  mkdirSync(dir, { recursive: true });
  const tensors: Record<string, TensorToWrite> = {};
  const copy = (file: string) => {
    const f = SafetensorsFile.open(file);
    for (const n of f.names()) tensors[n] = { dtype: f.entry(n).dtype, shape: [...f.entry(n).shape], bytes: f.readBytes(n) };
  };
  copy(join(FIXTURES, 'tiny-clip-vision', 'model.safetensors'));
  copy(join(FIXTURES, 'tiny-sd1', 'text_encoder', 'model.safetensors'));
  const next = gaussian(1501);
  const projection = Float32Array.from({ length: 16 * 32 }, () => next() * 0.2);
  tensors['text_projection.weight'] = { dtype: 'F32', shape: [16, 32], bytes: new Uint8Array(projection.buffer) };
  writeSafetensors(join(dir, 'model.safetensors'), tensors);
  const vision = { ...readJson(join(FIXTURES, 'tiny-clip-vision', 'config.json')) };
  const text = { ...readJson(join(FIXTURES, 'tiny-sd1', 'text_encoder', 'config.json')) };
  writeFileSync(
    join(dir, 'config.json'),
    JSON.stringify({ architectures: ['CLIPModel'], model_type: 'clip', projection_dim: 16, vision_config: vision, text_config: text }),
  );
  copyFileSync(join(FIXTURES, 'tiny-clip-vision', 'preprocessor_config.json'), join(dir, 'preprocessor_config.json'));
  for (const f of ['vocab.json', 'merges.txt', 'special_tokens_map.json', 'tokenizer_config.json'])
    copyFileSync(join(FIXTURES, 'tiny-sd1', 'tokenizer', f), join(dir, f));
  return dir;
}

function readJson(file: string): Record<string, unknown> {
  return JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
}
