// Over a real socket, against `kiln serve` in a child process with the fake engine blocking its worker
// thread the way onnxruntime does: the server stays responsive, and jobs survive crashes and shutdowns.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import https from 'node:https';
import { join } from 'node:path';
import { addFakeModel, FAKE_ENGINE_MODULE } from './helpers.ts';
import { tempDir } from '../queue/helpers.ts';
import { json, spawnServer, waitUntil } from './process.ts';

const ENV = { KILN_ENGINE_MODULE: FAKE_ENGINE_MODULE, KILN_FAKE_BLOCKING: '1' };

function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

test('/health answers in under 50 ms (p99 of 100 calls) while a blocking generation runs', async () => {
  const t = tempDir('kiln-sock-');
  addFakeModel(t.dir);
  const s = await spawnServer(['--data-dir', t.dir, '--model', 'fake-model'], { ...ENV, KILN_FAKE_STEP_MS: '40' });
  try {
    const sub = await json(`${s.url}/v1/jobs`, { method: 'POST', body: JSON.stringify({ prompt: 'x', width: 64, height: 64, steps: 150 }) });
    assert.equal(sub.status, 202);
    const id = sub.body.id;
    await waitUntil(async () => ((await json(`${s.url}/v1/jobs/${id}`)).body.step > 0 ? true : undefined), 10_000, 'job running');
    // Warm up the keep-alive connection first, so the measurement is the server, not TCP setup.
    for (let i = 0; i < 10; i++) await (await fetch(`${s.url}/health`)).json();
    const times: number[] = [];
    for (let i = 0; i < 100; i++) {
      const t0 = performance.now();
      const r = await fetch(`${s.url}/health`);
      await r.json();
      times.push(performance.now() - t0);
    }
    const during = (await json(`${s.url}/v1/jobs/${id}`)).body;
    assert.equal(during.state, 'running', 'the generation was still running while /health was measured');
    const p99 = percentile(times, 99);
    console.log(`# /health during generation: p50 ${percentile(times, 50).toFixed(2)} ms, p99 ${p99.toFixed(2)} ms, max ${Math.max(...times).toFixed(2)} ms`);
    assert.ok(p99 < 50, `p99 ${p99.toFixed(1)} ms`);
    // Cancel mid-run over HTTP: effective within a step or so.
    const c = await json(`${s.url}/v1/jobs/${id}/cancel`, { method: 'POST' });
    assert.equal(c.body.state, 'cancelled');
    assert.ok(c.body.step > 0 && c.body.step < 150, `stopped at step ${c.body.step}`);
  } finally {
    s.child.kill('SIGKILL');
    await s.exited;
    t.remove();
  }
});

test('SSE over a socket streams progress as it happens', async () => {
  const t = tempDir('kiln-sock-');
  addFakeModel(t.dir);
  const s = await spawnServer(['--data-dir', t.dir, '--model', 'fake-model'], { ...ENV, KILN_FAKE_STEP_MS: '30' });
  try {
    const { body } = await json(`${s.url}/v1/jobs`, { method: 'POST', body: JSON.stringify({ prompt: 'x', width: 64, height: 64, steps: 10 }) });
    const res = await fetch(`${s.url}/v1/jobs/${body.id}/events`);
    const reader = res.body!.getReader();
    const arrivals: Array<{ event: string; at: number }> = [];
    let buf = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += new TextDecoder().decode(value);
      for (let i = buf.indexOf('\n\n'); i >= 0; i = buf.indexOf('\n\n')) {
        const block = buf.slice(0, i);
        buf = buf.slice(i + 2);
        if (block.startsWith('event:')) arrivals.push({ event: block.split('\n')[0]!.slice(7), at: Date.now() });
      }
    }
    const progress = arrivals.filter((a) => a.event === 'progress');
    assert.ok(progress.length >= 10);
    assert.equal(arrivals[arrivals.length - 1]!.event, 'succeeded');
    // Progress frames arrive spread over the run, not all at the end.
    assert.ok(progress[progress.length - 1]!.at - progress[0]!.at >= 150, 'progress was not streamed live');
  } finally {
    s.child.kill('SIGKILL');
    await s.exited;
    t.remove();
  }
});

test('after kill -9, a restarted server accounts for every job: the running one re-runs, queued ones run', async () => {
  const t = tempDir('kiln-sock-');
  addFakeModel(t.dir);
  const args = ['--data-dir', t.dir, '--model', 'fake-model'];
  const first = await spawnServer(args, { ...ENV, KILN_FAKE_STEP_MS: '50' });
  const ids: string[] = [];
  try {
    for (let i = 0; i < 3; i++) {
      const r = await json(`${first.url}/v1/jobs`, {
        method: 'POST',
        body: JSON.stringify({ prompt: `job ${i}`, width: 64, height: 64, steps: i === 0 ? 100 : 3 }),
      });
      ids.push(r.body.id);
    }
    await waitUntil(async () => ((await json(`${first.url}/v1/jobs/${ids[0]}`)).body.step > 0 ? true : undefined), 10_000, 'job running');
  } finally {
    first.child.kill('SIGKILL');
    await first.exited;
  }
  const second = await spawnServer(args, { ...ENV, KILN_FAKE_STEP_MS: '2' });
  try {
    const states = await waitUntil(
      async () => {
        const all = await Promise.all(ids.map(async (id) => (await json(`${second.url}/v1/jobs/${id}`)).body));
        return all.every((j) => j.state === 'succeeded') ? all : undefined;
      },
      15_000,
      'all jobs to finish after restart',
    );
    assert.deepEqual(
      states.map((j) => j.attempts),
      [2, 1, 1],
      'the interrupted job ran a second time',
    );
  } finally {
    second.child.kill('SIGKILL');
    await second.exited;
    t.remove();
  }
});

test('SIGTERM re-queues the running job (after the grace period) and closes cleanly; the next start finishes it', async () => {
  const t = tempDir('kiln-sock-');
  addFakeModel(t.dir);
  const args = ['--data-dir', t.dir, '--model', 'fake-model', '--shutdown-grace', '0.2'];
  const first = await spawnServer(args, { ...ENV, KILN_FAKE_STEP_MS: '50' });
  const r = await json(`${first.url}/v1/jobs`, { method: 'POST', body: JSON.stringify({ prompt: 'long', width: 64, height: 64, steps: 100 }) });
  const queued = await json(`${first.url}/v1/jobs`, { method: 'POST', body: JSON.stringify({ prompt: 'next', width: 64, height: 64, steps: 2 }) });
  await waitUntil(async () => ((await json(`${first.url}/v1/jobs/${r.body.id}`)).body.step > 0 ? true : undefined), 10_000, 'job running');
  first.child.kill('SIGTERM');
  const code = await first.exited;
  assert.equal(code, 0, first.output());
  const second = await spawnServer(args, { ...ENV, KILN_FAKE_STEP_MS: '2' });
  try {
    for (const id of [r.body.id, queued.body.id]) {
      const done = await waitUntil(async () => {
        const j = (await json(`${second.url}/v1/jobs/${id}`)).body;
        return j.state === 'succeeded' ? j : undefined;
      });
      assert.equal(done.attempts, 1, 'a job stopped by shutdown does not use up an attempt');
    }
  } finally {
    second.child.kill('SIGKILL');
    await second.exited;
    t.remove();
  }
});

test('refuses to bind 0.0.0.0 without keys; starts with --insecure', async () => {
  const t = tempDir('kiln-sock-');
  try {
    await assert.rejects(spawnServer(['--data-dir', t.dir, '--host', '0.0.0.0'], ENV), /refusing to listen on 0\.0\.0\.0 without API keys/);
    const s = await spawnServer(['--data-dir', t.dir, '--host', '0.0.0.0', '--insecure'], ENV);
    s.child.kill('SIGKILL');
    await s.exited;
  } finally {
    t.remove();
  }
});

test('HTTPS with --tls-cert/--tls-key', { skip: spawnSync('openssl', ['version']).status === 0 ? false : 'openssl not installed' }, async () => {
  const t = tempDir('kiln-tls-');
  try {
    const key = join(t.dir, 'key.pem');
    const cert = join(t.dir, 'cert.pem');
    const gen = spawnSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=localhost']);
    assert.equal(gen.status, 0, String(gen.stderr));
    const s = await spawnServer(['--data-dir', t.dir, '--tls-cert', cert, '--tls-key', key], ENV);
    try {
      assert.ok(s.url.startsWith('https://'), s.url);
      const body = await new Promise<string>((resolve, reject) => {
        https
          .get(`${s.url}/health`, { rejectUnauthorized: false }, (res) => {
            let data = '';
            res.on('data', (d) => (data += d));
            res.on('end', () => resolve(data));
          })
          .on('error', reject);
      });
      assert.equal(JSON.parse(body).status, 'healthy');
    } finally {
      s.child.kill('SIGKILL');
      await s.exited;
    }
  } finally {
    t.remove();
  }
});
