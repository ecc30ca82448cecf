#!/usr/bin/env node
// The README's test command: the type check, the linter/formatter check, then every test/**/*.test.ts with
// Node's own test runner (through tsx), so CI and humans run the same thing. Arguments filter test files by
// path substring; `--no-checks` skips the type and lint checks while iterating on one file.
// Node 20's --test does not expand globs itself, hence this small launcher.
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';

function collect(dir) {
  const out = [];
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (name === 'fixtures' || name === 'node_modules') continue;
    if (statSync(p).isDirectory()) out.push(...collect(p));
    else if (name.endsWith('.test.ts')) out.push(p);
  }
  return out;
}

function step(title, command, args) {
  console.log(`# ${title}: ${command} ${args.join(' ')}`);
  const r = spawnSync(command, args, { stdio: 'inherit' });
  if (r.status !== 0) {
    console.error(`# ${title} failed (exit ${r.status ?? r.signal}); fix it before the tests run`);
    process.exit(r.status || 1);
  }
}

const args = process.argv.slice(2);
const checks = !args.includes('--no-checks');
const filters = args.filter((a) => a !== '--no-checks');
if (checks) {
  step('type check', process.execPath, ['node_modules/typescript/bin/tsc', '--noEmit', '-p', '.']);
  step('lint and format check', process.execPath, ['node_modules/@biomejs/biome/bin/biome', 'ci', '--colors=off', '--error-on-warnings', '.']);
}
const files = collect('test')
  .filter((f) => filters.length === 0 || filters.some((x) => f.includes(x)))
  .sort();
if (files.length === 0) {
  console.error('no test files matched');
  process.exit(1);
}
const r = spawnSync(process.execPath, ['--import', 'tsx', '--test', '--test-concurrency=1', ...files], { stdio: 'inherit' });
process.exit(r.status ?? 1);
