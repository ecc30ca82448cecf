// Guards for the architecture (docs/architecture.md): only the family files branch on a model family, nothing outside
// src/engine reaches past its door (src/engine/index.ts), layers import one way, and adapters hold no state.
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

/** The module specifiers a file imports (static, dynamic and worker URLs). */
function imports(text: string): string[] {
  return [...text.matchAll(/(?:from|import\(|new URL\()\s*'([^']+)'/g)].map((m) => m[1]!);
}

/** Files under `from` that import anything under one of the `forbidden` folders (data flows one way). */
function arrowsInto(from: string, forbidden: string[]): string[] {
  return files
    .filter((f) => f.path.startsWith(join('src', from)))
    .flatMap((f) =>
      imports(f.text)
        .filter((spec) => spec.startsWith('.') && forbidden.some((dir) => join(f.path, '..', spec).startsWith(join('src', dir))))
        .map((spec) => `${f.path}: ${spec}`),
    );
}

test('layers point one way: server -> queue -> storage -> engine, never back', () => {
  assert.deepEqual(arrowsInto('queue', ['server', 'cli']), []);
  assert.deepEqual(arrowsInto('engine', ['queue', 'server', 'storage', 'cli']), []);
  // Storage encodes the engine's images, so it may name the engine's image type (through its door).
  assert.deepEqual(arrowsInto('storage', ['queue', 'server', 'cli']), []);
  // The downloader is a leaf: servers and the CLI use it; it knows nothing of them.
  assert.deepEqual(arrowsInto('download', ['engine', 'queue', 'server', 'storage', 'cli']), []);
});

test('compatibility adapters keep no job state and no timers of their own', () => {
  const offenders = files
    .filter((f) => f.path.startsWith(join('src', 'server', 'compat')))
    .flatMap((f) => f.text.split('\n').flatMap((line, i) => (/new Map\b|setTimeout\(|setInterval\(/.test(line) ? [`${f.path}:${i + 1}: ${line.trim()}`] : [])));
  assert.deepEqual(offenders, []);
});
