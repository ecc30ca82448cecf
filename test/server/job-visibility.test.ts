// Who sees which jobs: one rule for the native job and image routes, RunPod and seed 004.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { maySeeJob, seesAllJobs, type Principal } from '../../src/server/auth.ts';

const alice: Principal = { name: 'alice', role: 'user', anonymous: false };
const admin: Principal = { name: 'root', role: 'admin', anonymous: false };
const keyless: Principal = { name: 'anonymous', role: 'admin', anonymous: true };
const publicCaller: Principal = { name: 'public', role: 'user', anonymous: true };

test('users see their own jobs only; admins and keyless servers see all', () => {
  assert.equal(maySeeJob(alice, 'alice'), true);
  assert.equal(maySeeJob(alice, 'bob'), false);
  assert.equal(maySeeJob(alice, undefined), false, 'no job, nothing to see');
  assert.equal(maySeeJob(admin, 'bob'), true);
  assert.equal(maySeeJob(keyless, 'bob'), true);
  assert.equal(maySeeJob(publicCaller, 'bob'), true, 'an anonymous principal only exists where keys are off or on public routes');
  assert.deepEqual([alice, admin, keyless].map(seesAllJobs), [false, true, true]);
});
