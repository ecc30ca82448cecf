// The Docker files, checked without a Docker engine (none runs here; hadolint is not packaged by Debian): each
// Dockerfile parses into instructions, is multi-stage, runs as a non-root user, has a HEALTHCHECK on /ready,
// keeps models and data in volumes, sets only real KILN_* variables, and every command it runs is one the
// README documents. compose.yaml: seed 002's port 8080, the same volumes and variables. compose.scale.yaml: Redis
// (AOF, noeviction), one API node and two workers on it, shared results, health checks, non-root, documented commands.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import { OPTIONS } from '../src/server/config.ts';

const README = readFileSync('README.md', 'utf8');
/** Variables Kiln reads that are not option rows. */
const OTHER_ENV = [
  'KILN_API_KEYS',
  'KILN_ADMIN_KEYS',
  'KILN_CONFIG',
  'HF_HOME',
  'HF_TOKEN',
  'CIVIT_KEY',
  'NODE_ENV',
  'ONNXRUNTIME_NODE_INSTALL',
  'AWS_ACCESS_KEY_ID',
  'AWS_SECRET_ACCESS_KEY',
];
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

interface ComposeService {
  build?: { dockerfile: string };
  image?: string;
  command: string[];
  ports?: string[];
  user?: string;
  environment?: Record<string, string>;
  volumes?: string[];
  healthcheck?: { test: string[] };
  depends_on?: Record<string, { condition: string }>;
}

test('compose.scale.yaml: Redis (AOF, noeviction), an API node and two workers, shared results, health checks, non-root', () => {
  // Merge keys (<<: *worker) as Docker Compose reads them.
  const compose = parseYaml(readFileSync('compose.scale.yaml', 'utf8'), { merge: true }) as {
    services: Record<string, ComposeService>;
    volumes: Record<string, unknown>;
  };
  const services = Object.entries(compose.services);
  const redis = compose.services.redis!;
  assert.deepEqual(redis.command, ['redis-server', '--appendonly', 'yes', '--maxmemory-policy', 'noeviction']);
  assert.ok(README.includes(redis.command.join(' ')), `README documents "${redis.command.join(' ')}"`);
  assert.ok(redis.user && !/^(root|0)$/.test(redis.user), 'Redis runs as a non-root user');
  assert.deepEqual(redis.healthcheck?.test, ['CMD', 'redis-cli', 'ping']);
  const kiln = services.filter(([, s]) => s.build);
  for (const [name, s] of kiln) {
    assert.equal(s.build!.dockerfile, 'Dockerfile', name);
    assert.equal(s.user, undefined, `${name} keeps the image's non-root user`);
    assert.equal(s.depends_on?.redis?.condition, 'service_healthy', `${name} waits for Redis`);
    assert.ok(s.healthcheck?.test?.[0] === 'CMD', `${name} has a health check`);
    for (const k of Object.keys(s.environment ?? {})) assert.ok(KNOWN_ENV.has(k), `${name}: ${k} is not a variable Kiln reads`);
    // The command it runs is one the README documents, as written.
    const cmd = `kiln ${s.command.join(' ')}`;
    assert.ok(README.includes(cmd), `${name}: "${cmd}" is not documented in README.md`);
    // Shared results: the same storage setting, and the results volume where the default points.
    assert.match(s.environment?.KILN_STORAGE ?? '', /^\$\{KILN_STORAGE:-\/results\}$/, name);
    assert.ok(s.volumes?.includes('kiln-results:/results'), `${name} mounts the shared results`);
  }
  const api = kiln.filter(([, s]) => s.command[0] === 'serve');
  const workers = kiln.filter(([, s]) => s.command[0] === 'worker');
  assert.equal(api.length, 1);
  assert.equal(workers.length, 2);
  assert.deepEqual(api[0]![1].command, ['serve', '--queue', 'redis://redis:6379', '--worker', 'false']);
  assert.deepEqual(api[0]![1].ports, ['8080:8080']);
  assert.match(api[0]![1].healthcheck!.test.join(' '), /\/ready/);
  for (const [name, w] of workers) {
    assert.deepEqual(w.command, ['worker', '--queue', 'redis://redis:6379'], name);
    // No HTTP port: the check reads the file the worker renews (tested against a live worker in test/scale).
    assert.match(w.healthcheck!.test.join(' '), /worker-alive'\)\.mtimeMs<30000/, name);
  }
  // One data folder per Kiln process (a second server on a data dir is refused).
  const dataVolumes = kiln.map(([, s]) => s.volumes!.find((v) => v.endsWith(':/data')));
  assert.equal(new Set(dataVolumes).size, kiln.length, `own /data volumes: ${dataVolumes}`);
  for (const v of [...dataVolumes, 'kiln-results:', 'redis-data:']) assert.ok(v!.split(':')[0]! in compose.volumes, `${v} is declared`);
  assert.match(README, /docker compose -f compose\.scale\.yaml up --build/);
  // The image has /results for the volume to take its non-root owner from.
  assert.match(readFileSync('Dockerfile', 'utf8'), /mkdir -p [^\n]*\/results && chown node:node [^\n]*\/results/);
});
