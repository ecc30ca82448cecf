// Guards for the engine's seams: only the family files branch on a model family, and nothing outside
// src/engine reaches past its door (src/engine/index.ts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';

function sources(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const p = join(dir, name);
    return statSync(p).isDirectory() ? sources(p) : /\.(ts|mts|mjs)$/.test(name) ? [p] : [];
  });
}

const SRC = 'src';
const files = sources(SRC).map((f) => ({ path: relative('.', f), text: readFileSync(f, 'utf8') }));

test('no family branching outside src/engine/families', () => {
  const pattern = /family ===|startsWith\('sdxl'\)|'sdxl-refiner'/;
  const offenders = files
    .filter((f) => !f.path.startsWith(join('src', 'engine', 'families')))
    .flatMap((f) => f.text.split('\n').flatMap((line, i) => (pattern.test(line) ? [`${f.path}:${i + 1}: ${line.trim()}`] : [])));
  assert.deepEqual(offenders, []);
});

test('outside src/engine, the engine is imported only through engine/index.ts', () => {
  const offenders = files
    .filter((f) => !f.path.startsWith(join('src', 'engine')))
    .flatMap((f) =>
      [...f.text.matchAll(/(?:from|import\(|new URL\()\s*'([^']*engine\/[^']*)'/g)]
        .map((m) => m[1]!)
        .filter((spec) => !spec.endsWith('engine/index.ts'))
        .map((spec) => `${f.path}: ${spec}`),
    );
  assert.deepEqual(offenders, []);
});
