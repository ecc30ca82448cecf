// `kiln serve` as users run it (a child process): every way a start can fail ends the process at once with one
// line on stderr and its exit code, with nothing left running; a second server on one data directory is
// refused, and a dead server's lock never blocks a restart; a damaged database is refused at start.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { closeSync, openSync, statSync, truncateSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import { SqliteJobBackend } from '../../src/queue/sqlite-backend.ts';
import { addFakeModel, FAKE_ENGINE_MODULE } from './helpers.ts';
import { spec, tempDir } from '../queue/helpers.ts';
import { json, spawnServer, waitUntil } from './process.ts';

const BIN = fileURLToPath(new URL('../../bin/kiln.js', import.meta.url));
const ENV = { KILN_ENGINE_MODULE: FAKE_ENGINE_MODULE };

interface Exit {
  code: number | null;
  stderr: string;
  ms: number;
}

/** Runs `kiln serve` expecting it to exit on its own (a start that hangs fails the test after 30 s). */
function serveUntilExit(args: string[], env: Record<string, string> = ENV): Promise<Exit> {
  const t0 = Date.now();
  const child = spawn(process.execPath, [BIN, 'serve', '--log-level', 'fatal', ...args], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`kiln serve did not exit within 30 s (a failed start must not linger):\n${stderr}`));
    }, 30_000);
    child.once('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stderr, ms: Date.now() - t0 });
    });
  });
}

/** Exactly one line on stderr, starting "kiln: ", matching `pattern`. */
function assertOneLine(exit: Exit, pattern: RegExp): void {
  const lines = exit.stderr.trimEnd().split('\n');
  assert.equal(lines.length, 1, `one line on stderr, got:\n${exit.stderr}`);
  assert.match(lines[0]!, /^kiln: /);
  assert.match(lines[0]!, pattern);
}

/** A data dir holding the placeholder model and one queued job (returns the job id). */
async function dirWithQueuedJob(): Promise<{ dir: string; remove: () => void; id: string }> {
  const t = tempDir('kiln-start-');
  addFakeModel(t.dir);
  const b = new SqliteJobBackend(join(t.dir, 'jobs.sqlite'));
  const job = await b.insert({ id: 'queued-before-start', owner: 'anonymous', spec: spec(), createdAt: Date.now() });
  await b.close();
  return { ...t, id: job.id };
}

async function stateOf(dir: string, id: string): Promise<{ state: string; attempts: number }> {
  const b = new SqliteJobBackend(join(dir, 'jobs.sqlite'));
  try {
    const job = (await b.get(id))!;
    return { state: job.state, attempts: job.attempts };
  } finally {
    await b.close();
  }
}

test('a port already in use: one line, exit 1, and the queue never ran', async () => {
  const t = await dirWithQueuedJob();
  const blocker = createServer();
  await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', r));
  const port = (blocker.address() as AddressInfo).port;
  try {
    const exit = await serveUntilExit(['--port', String(port), '--data-dir', t.dir, '--model', 'fake-model']);
    assert.equal(exit.code, 1);
    assertOneLine(exit, new RegExp(`port ${port} on 127\\.0\\.0\\.1 is already in use.*--port`));
    // The queue starts only after the port is bound: the job waiting in the data dir is untouched.
    assert.deepEqual(await stateOf(t.dir, t.id), { state: 'queued', attempts: 0 });
  } finally {
    blocker.close();
    t.remove();
  }
});

test('an unknown --model: one line naming it and what exists, exit 1', async () => {
  const t = tempDir('kiln-start-');
  addFakeModel(t.dir);
  try {
    const exit = await serveUntilExit(['--port', '0', '--data-dir', t.dir, '--model', 'no-such-model']);
    assert.equal(exit.code, 1);
    assertOneLine(exit, /unknown model "no-such-model" \(--model\).*found: fake-model/);
  } finally {
    t.remove();
  }
});

test('an unknown --vae: one line naming it and the VAEs there are, exit 1', async () => {
  const t = tempDir('kiln-start-');
  addFakeModel(t.dir);
  try {
    const exit = await serveUntilExit(['--port', '0', '--data-dir', t.dir, '--model', 'fake-model', '--vae', 'no-such-vae']);
    assert.equal(exit.code, 1);
    assertOneLine(exit, /unknown VAE "no-such-vae" \(--vae\).*found: none/);
  } finally {
    t.remove();
  }
});

test('an engine module that fails to start: one line, exit 1, the queue never ran', async () => {
  const t = await dirWithQueuedJob();
  const broken = join(t.dir, 'broken-engine.mjs');
  writeFileSync(broken, "throw new Error('this engine plugin is broken');\n");
  try {
    for (const module of [broken, join(t.dir, 'missing-engine.mjs')]) {
      const exit = await serveUntilExit(['--port', '0', '--data-dir', t.dir, '--model', 'fake-model'], { KILN_ENGINE_MODULE: module });
      assert.equal(exit.code, 1);
      assertOneLine(exit, /the engine failed to start: .*(this engine plugin is broken|engine module not found)/);
    }
    assert.deepEqual(await stateOf(t.dir, t.id), { state: 'queued', attempts: 0 });
  } finally {
    t.remove();
  }
});

test("a second server on the same data directory is refused; a killed server's lock does not block a restart", async () => {
  const t = await dirWithQueuedJob();
  const args = ['--data-dir', t.dir, '--model', 'fake-model'];
  const first = await spawnServer(args, ENV);
  try {
    const exit = await serveUntilExit(['--port', '0', ...args]);
    assert.equal(exit.code, 1);
    assertOneLine(exit, new RegExp(`data directory .* is in use by another kiln server \\(pid ${first.child.pid}\\)`));
    // The first one is unharmed and ran the job once.
    const done = await waitUntil(
      async () => {
        const j = (await json(`${first.url}/v1/jobs/${t.id}`)).body;
        return j.state === 'succeeded' ? j : undefined;
      },
      15_000,
      'the queued job',
    );
    assert.equal(done.attempts, 1);
  } finally {
    first.child.kill('SIGKILL');
    await first.exited;
  }
  // kill -9 left kiln.lock and kiln.pid behind: the kernel dropped the lock, so a restart takes it.
  const second = await spawnServer(args, ENV);
  try {
    assert.equal((await json(`${second.url}/v1/jobs/${t.id}`)).body.state, 'succeeded');
  } finally {
    second.child.kill('SIGTERM');
    assert.equal(await second.exited, 0);
  }
  // ...and a clean shutdown gave it up too.
  const third = await spawnServer(args, ENV);
  third.child.kill('SIGTERM');
  assert.equal(await third.exited, 0);
  t.remove();
});

/** A database with `n` finished jobs, closed cleanly (checkpointed into the main file). */
async function databaseWithJobs(dir: string, n: number): Promise<string> {
  const file = join(dir, 'jobs.sqlite');
  const b = new SqliteJobBackend(file);
  for (let i = 0; i < n; i++)
    await b.insert({ id: `job-${i}`, owner: 'anonymous', spec: spec({ prompt: `prompt ${i} ${'x'.repeat(200)}` }), createdAt: Date.now() });
  await b.close();
  return file;
}

test('a damaged database is refused at start with the file named, exit 65 (garbage, truncated, overwritten pages)', async () => {
  const damages: Array<[string, (file: string) => void]> = [
    ['garbage', (file) => writeFileSync(file, Buffer.alloc(64 * 1024, 0x5a))],
    ['truncated', (file) => truncateSync(file, Math.floor(statSync(file).size / 2))],
    [
      'overwritten pages',
      (file) => {
        const fd = openSync(file, 'r+');
        writeSync(fd, Buffer.alloc(8192, 0xa5), 0, 8192, 8192);
        closeSync(fd);
      },
    ],
  ];
  for (const [what, damage] of damages) {
    const t = tempDir('kiln-corrupt-');
    addFakeModel(t.dir);
    try {
      const file = await databaseWithJobs(t.dir, 300);
      damage(file);
      const exit = await serveUntilExit(['--port', '0', '--data-dir', t.dir, '--model', 'fake-model']);
      assert.equal(exit.code, 65, `${what}: ${exit.stderr}`);
      assertOneLine(exit, new RegExp(`the job database ${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} is damaged .*move the file aside`));
    } finally {
      t.remove();
    }
  }
});

test('a queued job whose stored spec cannot be read is failed with the reason at start; the others run', async () => {
  const t = await dirWithQueuedJob();
  const db = new Database(join(t.dir, 'jobs.sqlite'));
  db.prepare("INSERT INTO jobs (id, state, owner, spec, created_at) VALUES ('damaged', 'queued', 'anonymous', '{not json', ?)").run(Date.now());
  db.prepare("INSERT INTO jobs (id, state, owner, spec, created_at, attempts) VALUES ('damaged-running', 'running', 'anonymous', 'null', ?, 1)").run(
    Date.now(),
  );
  db.close();
  const s = await spawnServer(['--data-dir', t.dir, '--model', 'fake-model'], ENV);
  try {
    const list = await json(`${s.url}/v1/jobs`);
    assert.equal(list.status, 200);
    for (const id of ['damaged', 'damaged-running']) {
      const j = (await json(`${s.url}/v1/jobs/${id}`)).body;
      assert.equal(j.state, 'failed', id);
      assert.equal(j.error.code, 'storage');
      assert.match(j.error.message, /could not be read.*submit it again/);
    }
    await waitUntil(async () => ((await json(`${s.url}/v1/jobs/${t.id}`)).body.state === 'succeeded' ? true : undefined), 15_000, 'the good job');
  } finally {
    s.child.kill('SIGTERM');
    assert.equal(await s.exited, 0);
    t.remove();
  }
});
