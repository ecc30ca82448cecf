// A client that hangs up while a blocking route waits for its job gets the job cancelled, on every surface that
// waits (native /v1/generate, the compat adapters' shared wait, seed 001's heartbeat batch). A blocker job
// keeps each waiting job queued, so the hang-up always comes before the job is done.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { findQueued, holdQueue, listenCompatServer, type CompatServer } from './compat/helpers.ts';

let s: CompatServer & { url: string };
before(async () => {
  s = await listenCompatServer({ rateLimitPerMinute: 0 });
});
after(async () => {
  await s.close();
});

async function stateOf(id: string): Promise<string> {
  return (await s.app.inject(`/v1/jobs/${id}`)).json().state;
}

async function until(what: string, probe: () => Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await probe())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

const SMALL = { width: 64, height: 64, steps: 2 };
const surfaces: Array<[string, string, Record<string, unknown>]> = [
  ['native /v1/generate', '/v1/generate', { prompt: 'hang-up native', ...SMALL }],
  ["A1111 txt2img (the compat adapters' wait)", '/sdapi/v1/txt2img', { prompt: 'hang-up a1111', ...SMALL }],
  ['seed 001 batch /generate', '/generate', { prompts: ['hang-up seed-001'], ...SMALL }],
];

for (const [name, path, body] of surfaces) {
  test(`${name}: hanging up cancels the job it waited for`, async () => {
    const blocker = await holdQueue(s.app);
    try {
      const abort = new AbortController();
      const request = fetch(`${s.url}${path}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(body),
        signal: abort.signal,
      }).catch((e: Error) => e);
      // The blocker runs, so the one queued job is the one this request waits for.
      const waiting = await findQueued(s.app);
      abort.abort();
      assert.ok((await request) instanceof Error, 'the request was aborted, not answered');
      await until('the job to be cancelled', async () => (await stateOf(waiting.id)) === 'cancelled');
    } finally {
      await blocker.release();
    }
  });
}

test('a client that reads its answer cancels nothing when the connection closes', async () => {
  const r = await fetch(`${s.url}/v1/generate`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', connection: 'close' },
    body: JSON.stringify({ prompt: 'kept', ...SMALL }),
  });
  assert.equal(r.status, 200);
  const { id } = (await r.json()) as { id: string };
  await new Promise((res) => setTimeout(res, 100));
  assert.equal(await stateOf(id), 'succeeded');
});
