// Errors cross the engine-process boundary as plain messages; what callers map on must survive the trip.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { KilnInputError } from '../../src/engine/index.ts';
import { reviveError, toWorkerError } from '../../src/queue/engine-protocol.ts';
import { classifyError } from '../../src/queue/queue.ts';

const roundTrip = (e: unknown) => reviveError(structuredClone(toWorkerError(e)));

test('a full disk inside the engine reaches the queue as a storage failure, not an internal one', () => {
  const enospc = Object.assign(new Error("ENOSPC: no space left on device, write '/cache/graphs/unet.onnx'"), { code: 'ENOSPC' });
  const revived = roundTrip(enospc);
  assert.equal((revived as Error & { code?: string }).code, 'ENOSPC');
  assert.equal(classifyError(revived).code, 'storage');
  assert.equal(classifyError(roundTrip(new Error('boom'))).code, 'internal');
});

test('engine input errors keep their class and field across the boundary', () => {
  const revived = roundTrip(new KilnInputError('clip_skip must be an integer from 1 to 5', 'clip_skip'));
  assert.ok(revived instanceof KilnInputError);
  assert.deepEqual(classifyError(revived), { code: 'input', message: 'clip_skip must be an integer from 1 to 5', field: 'clip_skip' });
});
