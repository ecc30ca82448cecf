// The Docker files, checked without a Docker engine (none runs here; hadolint is not packaged by Debian): each
// Dockerfile parses into instructions, is multi-stage, runs as a non-root user, has a HEALTHCHECK on /ready,
// keeps models and data in volumes, sets only real KILN_* variables, and every command it runs is one the
// README documents. compose.yaml: seed 002's port 8080, the same volumes and variables.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import { OPTIONS } from '../src/server/config.ts';

const README = readFileSync('README.md', 'utf8');
/** Variables Kiln reads that are not option rows. */
const OTHER_ENV = ['KILN_API_KEYS', 'KILN_ADMIN_KEYS', 'KILN_CONFIG', 'HF_HOME', 'HF_TOKEN', 'CIVIT_KEY', 'NODE_ENV', 'ONNXRUNTIME_NODE_INSTALL'];
const KNOWN_ENV = new Set([...OPTIONS.map((o) => o.env), ...OTHER_ENV]);

interface Instruction {
  op: string;
  args: string;
  line: number;
}

/** Dockerfile -> instructions (comments dropped, backslash continuations joined). */
function parseDockerfile(text: string): Instruction[] {
  const out: Instruction[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const start = i;
    let line = lines[i]!;
    if (/^\s*(#|$)/.test(line)) continue;
    while (line.endsWith('\\')) line = `${line.slice(0, -1)} ${lines[++i]!.trim()}`;
    const m = /^\s*([A-Z]+)\s+(.*)$/.exec(line);
    assert.ok(m, `line ${start + 1}: not an instruction: ${line}`);
    out.push({ op: m[1]!, args: m[2]!.trim(), line: start + 1 });
  }
  return out;
}

/** KEY=value pairs of an ENV instruction. */
function envKeys(args: string): string[] {
  return [...args.matchAll(/([A-Z_][A-Z0-9_]*)=/g)].map((m) => m[1]!);
}

function execForm(args: string): string[] {
  const parsed = JSON.parse(args) as unknown;
  assert.ok(Array.isArray(parsed), `exec form expected: ${args}`);
  return parsed as string[];
}

for (const file of ['Dockerfile', 'Dockerfile.cuda']) {
  test(`${file}: multi-stage, non-root, HEALTHCHECK on /ready, volumes, real KILN_* env, documented commands`, () => {
    const ins = parseDockerfile(readFileSync(file, 'utf8'));
    const known = new Set(['FROM', 'WORKDIR', 'RUN', 'COPY', 'ENV', 'USER', 'VOLUME', 'EXPOSE', 'HEALTHCHECK', 'ENTRYPOINT', 'CMD', 'ARG']);
    for (const i of ins) assert.ok(known.has(i.op), `${file}:${i.line}: unexpected instruction ${i.op}`);
    const froms = ins.filter((i) => i.op === 'FROM');
    assert.ok(froms.length >= 2, 'multi-stage');
    assert.match(froms[0]!.args, / AS deps$/);
    const lastFrom = ins.lastIndexOf(froms.at(-1)!);
    const final = ins.slice(lastFrom);
    assert.ok(
      final.some((i) => i.op === 'COPY' && i.args.startsWith('--from=deps ')),
      'the runtime stage copies the built dependencies',
    );
    const user = final.filter((i) => i.op === 'USER').at(-1);
    assert.ok(user && !/^(root|0)$/.test(user.args), 'runs as a non-root user');
    const health = final.find((i) => i.op === 'HEALTHCHECK');
    assert.ok(health && /\/ready/.test(health.args), 'HEALTHCHECK on /ready');
    assert.deepEqual(execForm(final.find((i) => i.op === 'VOLUME')!.args), ['/data', '/models']);
    assert.equal(final.find((i) => i.op === 'EXPOSE')?.args, '8080');
    for (const e of ins.filter((i) => i.op === 'ENV'))
      for (const k of envKeys(e.args)) assert.ok(KNOWN_ENV.has(k), `${file}:${e.line}: ${k} is not a variable Kiln reads`);
    // The command it runs: `kiln serve`, as the README documents.
    const cmd = [...execForm(final.find((i) => i.op === 'ENTRYPOINT')!.args), ...execForm(final.find((i) => i.op === 'CMD')!.args)];
    assert.deepEqual(cmd, ['node', 'bin/kiln.js', 'serve']);
    assert.match(README, /kiln serve/);
    // Every npm/node command of a RUN step appears in the README.
    for (const run of ins.filter((i) => i.op === 'RUN')) {
      for (const part of run.args.split(/&&|\(|\)/).map((p) => p.trim())) {
        if (!/^(npm|node) /.test(part)) continue;
        assert.ok(README.includes(part), `${file}:${run.line}: "${part}" is not documented in README.md`);
      }
    }
    const installSwitch = ins.find((i) => i.op === 'ENV' && i.args.startsWith('ONNXRUNTIME_NODE_INSTALL='));
    assert.ok(installSwitch && README.includes(installSwitch.args), `${file}: the onnxruntime install switch (${installSwitch?.args}) is documented`);
  });
}

test('compose.yaml: the single-node server on port 8080 with the image volumes and real variables', () => {
  const compose = parseYaml(readFileSync('compose.yaml', 'utf8')) as {
    services: Record<string, { build: { dockerfile: string }; ports: string[]; environment: Record<string, string>; volumes: string[] }>;
    volumes: Record<string, unknown>;
  };
  const kiln = compose.services.kiln!;
  assert.equal(kiln.build.dockerfile, 'Dockerfile');
  assert.deepEqual(kiln.ports, ['8080:8080']);
  for (const k of Object.keys(kiln.environment)) assert.ok(KNOWN_ENV.has(k), `${k} is not a variable Kiln reads`);
  assert.deepEqual(
    kiln.volumes.map((v) => v.split(':')[1]),
    ['/data', '/models'],
  );
  assert.ok('kiln-data' in compose.volumes);
  assert.match(README, /docker compose up --build/);
});
