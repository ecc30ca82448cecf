// Graph-build progress: a model's first job on a machine builds its graphs; the engine process reports each build
// (which network, bytes, fraction) as 'loading' progress of the job, the server logs it, and `kiln generate` shows
// it. A second job finds the graphs cached and reports no builds.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildApp } from '../../src/server/app.ts';
import { testConfig } from '../../src/server/config.ts';
import type { JobEvent } from '../../src/queue/job.ts';
import { tempDir } from '../queue/helpers.ts';
import { logLines } from './helpers.ts';

const TINY = fileURLToPath(new URL('../fixtures/tiny-sd1', import.meta.url));
const BIN = fileURLToPath(new URL('../../bin/kiln.js', import.meta.url));

interface Line {
  msg: string;
  jobId?: string;
  network?: string;
  percent?: number;
  bytes?: number;
  totalBytes?: number;
}

test('the first job reports its graph builds as loading progress and in the log; the second builds nothing', async () => {
  const t = tempDir('kiln-build-progress-');
  const { lines, logStream } = logLines<Line>();
  const app = await buildApp(testConfig(t.dir, { model: TINY, logLevel: 'info' }), { logStream });
  const events: JobEvent[] = [];
  try {
    await app.ready();
    await app.kiln.engineReady;
    const off = app.kiln.queue.events('*', (e) => events.push(e));
    const payload = { prompt: 'a cat', width: 64, height: 64, steps: 2, seed: 1 };
    const first = await app.inject({ method: 'POST', url: '/v1/generate', payload });
    assert.equal(first.statusCode, 200, first.body);
    const firstId = first.json().id;

    // The job's progress: a 'loading' phase before sampling (the build of the text encoder and the UNet).
    const phases = events.filter((e) => e.type === 'progress' && e.job.id === firstId).map((e) => (e as { phase?: string }).phase);
    const firstSampling = phases.indexOf('sampling');
    assert.ok(phases.indexOf('loading') >= 0 && phases.indexOf('loading') < firstSampling, `phases: ${phases.join(', ')}`);

    // The log: each graph's start, and its end, with the network and sizes.
    const mine = lines.filter((l) => l.jobId === firstId && l.network);
    for (const network of ['text-encoder-0', 'unet', 'vae-decoder']) {
      const start = mine.find((l) => l.network === network && /^building .* graph \(first use on this machine only, ~\d+ s, \d+ MB\)…$/.test(l.msg));
      const end = mine.find((l) => l.network === network && /graph built in \d+\.\d s/.test(l.msg));
      assert.ok(start && end, `${network}: ${mine.map((l) => l.msg).join(' | ')}`);
      assert.ok(start.totalBytes! > 0 && end.percent === 100, network);
    }
    assert.ok(
      mine.some((l) => l.msg.startsWith('building UNet graph (first use')),
      'people-readable network names',
    );

    // Cached now: the same job again builds nothing.
    const second = await app.inject({ method: 'POST', url: '/v1/generate', payload });
    assert.equal(second.statusCode, 200, second.body);
    const secondId = second.json().id;
    assert.deepEqual(
      lines.filter((l) => l.jobId === secondId && l.network),
      [],
    );
    assert.ok(!events.some((e) => e.type === 'progress' && e.job.id === secondId && (e as { phase?: string }).phase === 'loading'));
    off();
  } finally {
    await app.close();
    t.remove();
  }
});

test('kiln generate says which graph it builds on a first run, and nothing about builds on the next', () => {
  const t = tempDir('kiln-build-cli-');
  try {
    const run = () =>
      spawnSync(
        process.execPath,
        [
          BIN,
          'generate',
          'a cat',
          '-m',
          TINY,
          '--steps',
          '1',
          '--width',
          '64',
          '--height',
          '64',
          '--seed',
          '1',
          '-o',
          join(t.dir, 'out.png'),
          '--cache-dir',
          join(t.dir, 'cache'),
        ],
        { encoding: 'utf8', timeout: 120_000, env: { ...process.env, KILN_DATA_DIR: join(t.dir, 'data') } },
      );
    const first = run();
    assert.equal(first.status, 0, first.stderr);
    assert.match(first.stderr, /building UNet graph \(first run only\)… 0%/);
    assert.match(first.stderr, /UNet graph built in \d+\.\ds/);
    const second = run();
    assert.equal(second.status, 0, second.stderr);
    assert.doesNotMatch(second.stderr, /graph/);
  } finally {
    t.remove();
  }
});
