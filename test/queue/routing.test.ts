// Model-aware routing's pure parts: the order a worker looks at model queues in, and queue names.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ANY_ROUTE, bullQueueName, ROTATE_EVERY, routeOrder, type JobRouting } from '../../src/queue/routing.ts';
import { modelRouting } from '../../src/server/model-routes.ts';
import type { ModelRegistry } from '../../src/server/models/registry.ts';
import { spec } from './helpers.ts';

const routing = (serves: string[], loaded: string[]): JobRouting => ({
  routeOf: () => ANY_ROUTE,
  serves: (r) => r === ANY_ROUTE || serves.includes(r),
  preferred: () => loaded,
});

test('a worker looks at loaded models first, then any-worker jobs, then its other models; every 4th claim the others first', () => {
  const r = routing(['a', 'b', 'c'], ['b']);
  assert.deepEqual(routeOrder(['c', 'x', 'a', 'b'], r, 1), ['b', ANY_ROUTE, 'a', 'c']);
  assert.deepEqual(routeOrder(['c', 'x', 'a', 'b'], r, ROTATE_EVERY), ['a', 'c', ANY_ROUTE, 'b']);
  assert.deepEqual(routeOrder(['a'], undefined, 1), [ANY_ROUTE], 'without routing: the one queue');
  assert.equal(bullQueueName(ANY_ROUTE), 'jobs');
  assert.match(bullQueueName('sdxl/juggernaut: v9'), /^jobs-m-[A-Za-z0-9_-]+$/);
  assert.notEqual(bullQueueName('a'), bullQueueName('b'));
});

test("a job's route is its checkpoint's name (or the default's); a restricted worker serves only its model", () => {
  const entries = [
    { name: 'tiny-sd1', labels: ['sd1'] },
    { name: 'tiny-sdxl', labels: [] },
  ];
  const models = {
    lookup: (n: string | undefined) => (n === undefined ? entries[0] : entries.find((e) => e.name === n || e.labels.includes(n))),
    list: () => entries,
  } as unknown as ModelRegistry;
  const open = modelRouting(
    () => models,
    () => ['tiny-sdxl'],
  );
  assert.equal(open.routeOf(spec({ model: 'sd1' })), 'tiny-sd1');
  assert.equal(open.routeOf(spec()), 'tiny-sd1', 'no model: the default');
  assert.equal(open.routeOf(spec({ model: 'nope' })), ANY_ROUTE);
  assert.equal(open.routeOf({ ...spec(), kind: 'upscale' }), ANY_ROUTE, 'upscaling needs no checkpoint');
  assert.ok(open.serves('tiny-sd1') && open.serves('tiny-sdxl') && open.serves(ANY_ROUTE) && !open.serves('other'));
  assert.deepEqual(open.servedModels(), ['tiny-sd1', 'tiny-sdxl']);
  assert.deepEqual(open.preferred(), ['tiny-sdxl']);
  const only = modelRouting(
    () => models,
    () => [],
    () => 'tiny-sdxl',
  );
  assert.ok(only.serves('tiny-sdxl') && only.serves(ANY_ROUTE) && !only.serves('tiny-sd1'));
  assert.deepEqual(only.servedModels(), ['tiny-sdxl']);
});
