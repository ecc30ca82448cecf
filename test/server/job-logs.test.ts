// Job log lines through the real server and engine on tiny-sd1, read from the pino stream: start, success,
// failure, cancel (queued and running) and timeout, each at info with the job id, model, surface and durations.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { buildApp } from '../../src/server/app.ts';
import { testConfig } from '../../src/server/config.ts';
import { tempDir } from '../queue/helpers.ts';
import { logLines } from './helpers.ts';
import { waitUntil } from './process.ts';

const TINY = fileURLToPath(new URL('../fixtures/tiny-sd1', import.meta.url));
const INFO = 30;

interface Line {
  level: number;
  msg: string;
  jobId?: string;
  model?: string;
  surface?: string;
  queueWaitMs?: number;
  runMs?: number;
  while?: string;
  code?: string;
}

test('job start, end, failure, cancel and timeout are logged at info with id, model, surface and durations', async () => {
  const t = tempDir('kiln-job-logs-');
  const { lines, logStream } = logLines<Line>();
  const app = await buildApp(testConfig(t.dir, { model: TINY, logLevel: 'info' }), { logStream });
  const of = (id: string, msg: string) => lines.find((l) => l.jobId === id && l.msg === msg);
  const logged = (id: string, msg: string) => waitUntil(async () => of(id, msg), 20_000, `"${msg}" for ${id}`);
  const small = { prompt: 'a cat', width: 64, height: 64, steps: 2, seed: 1 };
  try {
    await app.ready();
    await app.kiln.engineReady;

    // Success, through A1111 (its surface and the default model's name in every line).
    const ok = await app.inject({ method: 'POST', url: '/sdapi/v1/txt2img', payload: { ...small, force_task_id: 'log-ok' } });
    assert.equal(ok.statusCode, 200, ok.body);
    const okId = (await app.kiln.queue.list({ limit: 1 }))[0]!.id;
    for (const msg of ['job started', 'job succeeded']) {
      const line = await logged(okId, msg);
      assert.equal(line.level, INFO, msg);
      assert.deepEqual([line.model, line.surface], ['tiny-sd1', 'a1111'], msg);
      assert.ok(line.queueWaitMs! >= 0, `${msg}: queue wait`);
    }
    assert.ok(of(okId, 'job succeeded')!.runMs! > 0, 'run time');

    // Failure at run time: clip skip deeper than the tiny text encoder (an input error the engine finds).
    const bad = await app.inject({ method: 'POST', url: '/v1/jobs', payload: { ...small, clip_skip: 12 } });
    assert.equal(bad.statusCode, 202, bad.body);
    const failed = await logged(bad.json().id, 'job failed');
    assert.deepEqual([failed.level, failed.surface, failed.model, failed.code], [INFO, 'native', 'tiny-sd1', 'input']);
    assert.ok(failed.runMs !== undefined && failed.queueWaitMs !== undefined);

    // A long job, a queued one behind it cancelled, then the long one cancelled while it runs.
    const long = await app.inject({ method: 'POST', url: '/v1/jobs', payload: { ...small, steps: 150 } });
    const queued = await app.inject({ method: 'POST', url: '/v1/jobs', payload: small });
    await logged(long.json().id, 'job started');
    await app.inject({ method: 'POST', url: `/v1/jobs/${queued.json().id}/cancel` });
    const cq = await logged(queued.json().id, 'job cancelled');
    assert.deepEqual([cq.level, cq.while, cq.runMs], [INFO, 'queued', undefined]);
    assert.ok(cq.queueWaitMs! >= 0);
    await app.inject({ method: 'POST', url: `/v1/jobs/${long.json().id}/cancel` });
    const cr = await logged(long.json().id, 'job cancelled');
    assert.deepEqual([cr.level, cr.while, cr.surface], [INFO, 'running', 'native']);
    assert.ok(cr.runMs! >= 0);

    // Its own execution timeout.
    const slow = await app.inject({ method: 'POST', url: '/v1/jobs', payload: { ...small, steps: 150, timeout_s: 0.05 } });
    assert.equal(slow.statusCode, 202, slow.body);
    const to = await logged(slow.json().id, 'job timed out');
    assert.deepEqual([to.level, to.model, to.surface], [INFO, 'tiny-sd1', 'native']);
    assert.ok(to.runMs! >= 40, `ran until the limit: ${to.runMs} ms`);
  } finally {
    await app.close();
    t.remove();
  }
});
