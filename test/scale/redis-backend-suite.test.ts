// The server's API tests again, on the Redis queue: the same test files run in a child test runner with
// KILN_TEST_REDIS_URL set (every test server then keeps its jobs in a real redis-server instead of SQLite), so the
// HTTP behaviour is checked to be identical on both backends. The files here run on every `npm test`: each one
// whose outcome depends on the queue (job model, positions and priorities, progress and previews, owners and keys,
// hang-ups, and the compat surfaces that keep job state: RunPod, A1111, seed 004). The whole server suite runs
// the same way with
//   KILN_TEST_REDIS_URL=redis://127.0.0.1:6379 npm test -- --no-checks test/server/
// (2026-11-30, 56 files, 31 min at load ~20 on 2 cores: all passed but two timing asserts that fail alike on SQLite
// at that load: real-engine's /health p99 and socket's SSE spread). Left out of every run, for time: files that test the engine or the
// models through an unchanged queue path (real-engine, layerdiffuse, sdxl-native, vae, tiling, inpaint, compat
// hires/lora/face-restoration/sde-noise/...), the fault suite (engine-process kills and crashes, ~5 min; its
// SIGTERM restarts spawn `kiln serve`, which runs SQLite), the Chromium playground, the other seed/OpenAI
// surfaces (their queue use is the shared compat wait that RunPod and A1111 exercise here), and files that start
// no queue at all (config, auth helpers, CORS, model listing).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { startRedis } from '../queue/redis-server.ts';

const FILES = [
  'test/server/api.test.ts',
  'test/server/job-model.test.ts',
  'test/server/job-visibility.test.ts',
  'test/server/preview.test.ts',
  'test/server/priority.test.ts',
  'test/server/hang-up.test.ts',
  'test/server/auth.test.ts',
  'test/server/compat/runpod.test.ts',
  'test/server/compat/a1111.test.ts',
  'test/server/compat/seed-004.test.ts',
];

test('the core server API tests pass on the Redis backend', { timeout: 1_200_000 }, async () => {
  const redis = await startRedis();
  try {
    // Without NODE_TEST_CONTEXT the child is a runner of its own (with it, it would report to this runner).
    const { NODE_TEST_CONTEXT: _, ...env } = process.env;
    const child = spawn(process.execPath, ['--import', 'tsx', '--test', '--test-concurrency=1', '--test-reporter=tap', ...FILES], {
      env: { ...env, KILN_TEST_REDIS_URL: redis.url },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    const code = await new Promise<number | null>((r) => child.once('exit', r));
    const failed = out.split('\n').filter((l) => /^\s*not ok /.test(l));
    const passed = /^# pass (\d+)/m.exec(out)?.[1];
    assert.equal(code, 0, `on Redis: ${failed.join('\n')}\n${out.slice(-3000)}`);
    assert.ok(Number(passed) >= 20, `expected the API tests to have run, got "${passed}" passing`);
  } finally {
    await redis.close();
  }
});
