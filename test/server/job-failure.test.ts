// The one job-failure -> HTTP status table that native /v1/generate and the compat adapters answer with.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { ErrorCode, Job, JobState } from '../../src/queue/job.ts';
import { failureStatus } from '../../src/server/job-failure.ts';
import { jobFailure } from '../../src/server/compat/common.ts';

function job(state: JobState, error?: { code: ErrorCode; message: string; field?: string }): Job {
  return {
    id: 'j1',
    seq: 1,
    priority: 0,
    turn: 1,
    ticket: 1,
    state,
    owner: 'anonymous',
    spec: {} as Job['spec'],
    createdAt: 0,
    attempts: 1,
    progress: 0,
    step: 0,
    totalSteps: 0,
    extra: {},
    ...(error ? { error } : {}),
  };
}

test('failureStatus: each error code has its status; cancelled is 409; a failure without a code is internal', () => {
  const cases: Array<[Job, number, string]> = [
    [job('failed', { code: 'input', message: 'm' }), 400, 'input'],
    [job('failed', { code: 'model', message: 'm' }), 422, 'model'],
    [job('failed', { code: 'timeout', message: 'm' }), 504, 'timeout'],
    [job('failed', { code: 'interrupted', message: 'm' }), 500, 'interrupted'],
    [job('failed', { code: 'internal', message: 'm' }), 500, 'internal'],
    [job('failed'), 500, 'internal'],
    [job('cancelled'), 409, 'cancelled'],
    // A job cancelled by its execution timeout keeps its error, but it still answers as cancelled.
    [job('cancelled', { code: 'timeout', message: 'm' }), 409, 'cancelled'],
  ];
  for (const [j, status, code] of cases) assert.deepEqual(failureStatus(j), { status, code }, `${j.state} ${j.error?.code}`);
});

test('jobFailure: the HttpError a compat surface raises carries the table status, the message and the field', () => {
  const input = jobFailure(job('failed', { code: 'input', message: 'steps: too many', field: 'steps' }));
  assert.deepEqual([input.statusCode, input.code, input.message, input.field], [400, 'input', 'steps: too many', 'steps']);
  const bare = jobFailure(job('failed'));
  assert.deepEqual([bare.statusCode, bare.code, bare.message], [500, 'internal', 'the job failed']);
  const cancelled = jobFailure(job('cancelled', { code: 'input', message: 'stopped', field: 'steps' }));
  assert.deepEqual([cancelled.statusCode, cancelled.code, cancelled.message, cancelled.field], [409, 'cancelled', 'stopped', undefined]);
  assert.equal(jobFailure(job('cancelled')).message, 'the job was cancelled');
  // Seeds 001 and 002 say what failed before why.
  const seed = jobFailure(job('failed', { code: 'model', message: 'bad weights' }), 'Image generation failed: ');
  assert.deepEqual([seed.statusCode, seed.message], [422, 'Image generation failed: bad weights']);
});
