// /metrics with prom-client: default process metrics, and after jobs through two surfaces the job counters by
// outcome and surface, queue wait, per-phase and generation histograms, loaded models.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { surfaceOf } from '../../src/server/metrics.ts';
import { post, startTestServer } from './helpers.ts';

test('surfaceOf names the API a path belongs to', () => {
  assert.equal(surfaceOf('/sdapi/v1/txt2img'), 'a1111');
  assert.equal(surfaceOf('/v1/images/generations'), 'openai');
  assert.equal(surfaceOf('/runsync'), 'runpod');
  assert.equal(surfaceOf('/v1/generate?x=1'), 'native');
  assert.equal(surfaceOf('/post_config'), 'seed-003');
});

test('/metrics exposes the histograms and counters after a job', async () => {
  const s = await startTestServer();
  try {
    const native = await post(s.app, '/v1/generate', { prompt: 'x', width: 64, height: 64, steps: 2 });
    assert.equal(native.statusCode, 200, native.body);
    const a1111 = await post(s.app, '/sdapi/v1/txt2img', { prompt: 'x', width: 64, height: 64, steps: 2 });
    assert.equal(a1111.statusCode, 200, a1111.body);
    const r = await s.app.inject('/metrics');
    assert.equal(r.statusCode, 200);
    assert.match(String(r.headers['content-type']), /^text\/plain; version=0\.0\.4/);
    const m = r.body;
    // prom-client's default process metrics
    assert.match(m, /^process_cpu_user_seconds_total \d/m);
    assert.match(m, /^nodejs_eventloop_lag_seconds \d/m);
    // job counters by outcome and API surface
    assert.match(m, /^kiln_jobs_finished_total\{state="succeeded",outcome="succeeded",surface="native"\} 1$/m);
    assert.match(m, /^kiln_jobs_finished_total\{state="succeeded",outcome="succeeded",surface="a1111"\} 1$/m);
    // histograms
    assert.match(m, /^kiln_queue_wait_seconds_count\{surface="native"\} 1$/m);
    for (const phase of ['load', 'encode', 'sampling', 'decode']) assert.match(m, new RegExp(`^kiln_phase_seconds_count\\{phase="${phase}"\\} 2$`, 'm'));
    assert.match(m, /^kiln_phase_seconds_bucket\{le="\+Inf",phase="sampling"\} 2$/m);
    assert.match(m, /^kiln_generation_seconds_count 2$/m);
    assert.match(m, /^# TYPE kiln_model_load_seconds histogram$/m);
    assert.match(m, /^kiln_queue_depth 0$/m);
    assert.match(m, /^kiln_loaded_models 1$/m);
    assert.match(m, /^kiln_loaded_model_info\{model="fake-model",family="unknown"\} 1$/m);
  } finally {
    await s.close();
  }
});
