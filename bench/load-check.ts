// Load check (not a unit test): N concurrent submissions against a running Kiln server. Every submission
// must be accepted (202) or refused with 429 + Retry-After, and every accepted job must complete.
//
//   node --import tsx bench/load-check.ts [--url http://127.0.0.1:7860] [--n 200] [--key KEY] [--steps 2]
//   node --import tsx bench/load-check.ts --spawn          # starts its own server on the tiny fixture model
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseFlags } from '../src/server/config.ts';
import { spawnServer } from '../test/server/process.ts';

const { flags } = parseFlags(process.argv.slice(2));
const n = Number(flags.n ?? 200);
const steps = Number(flags.steps ?? 2);
const key = flags.key ? String(flags.key) : undefined;
const headers: Record<string, string> = { 'content-type': 'application/json', ...(key ? { 'x-api-key': key } : {}) };

let url = flags.url ? String(flags.url) : 'http://127.0.0.1:7860';
let stop = async () => {};
if (flags.spawn) {
  const dir = mkdtempSync(join(tmpdir(), 'kiln-load-'));
  const model = fileURLToPath(new URL('../test/fixtures/tiny-sd1', import.meta.url));
  const s = await spawnServer(['--data-dir', dir, '--model', model, '--max-queue', String(flags['max-queue'] ?? 100), '--rate-limit', '0']);
  url = s.url;
  stop = async () => {
    s.child.kill('SIGTERM');
    await s.exited;
    rmSync(dir, { recursive: true, force: true });
  };
  for (let i = 0; i < 600 && (await fetch(`${url}/ready`)).status !== 200; i++) await new Promise((r) => setTimeout(r, 100));
}

const t0 = Date.now();
const results = await Promise.all(
  Array.from({ length: n }, async (_, i) => {
    const r = await fetch(`${url}/v1/jobs`, {
      method: 'POST',
      headers,
      body: JSON.stringify({ prompt: `load check ${i}`, width: 64, height: 64, steps, seed: i, output: { response: 'url' } }),
    });
    const body = (await r.json()) as { id?: string };
    return { status: r.status, id: body.id, retryAfter: r.headers.get('retry-after') };
  }),
);
const submitMs = Date.now() - t0;
const accepted = results.filter((r) => r.status === 202);
const refused = results.filter((r) => r.status === 429);
const other = results.filter((r) => r.status !== 202 && r.status !== 429);
const badRetry = refused.filter((r) => !(Number(r.retryAfter) >= 1));

// Wait for every accepted job to reach a final state.
const final = new Map<string, string>();
const deadline = Date.now() + 30 * 60_000;
while (final.size < accepted.length && Date.now() < deadline) {
  for (const a of accepted) {
    if (final.has(a.id!)) continue;
    const j = (await (await fetch(`${url}/v1/jobs/${a.id}`, { headers })).json()) as { state: string };
    if (['succeeded', 'failed', 'cancelled'].includes(j.state)) final.set(a.id!, j.state);
  }
  if (final.size < accepted.length) await new Promise((r) => setTimeout(r, 250));
}
const totalMs = Date.now() - t0;
const succeeded = [...final.values()].filter((s) => s === 'succeeded').length;
const health = await (await fetch(`${url}/health`)).json();
await stop();

console.log(
  JSON.stringify(
    {
      submissions: n,
      submit_ms: submitMs,
      accepted: accepted.length,
      refused_429: refused.length,
      refused_without_retry_after: badRetry.length,
      other_status: other.map((o) => o.status),
      completed: final.size,
      succeeded,
      total_s: Number((totalMs / 1000).toFixed(1)),
      jobs_per_s: Number((succeeded / (totalMs / 1000)).toFixed(2)),
      health_after: health.status,
    },
    null,
    2,
  ),
);
const ok = other.length === 0 && badRetry.length === 0 && succeeded === accepted.length;
console.log(ok ? 'LOAD CHECK PASSED' : 'LOAD CHECK FAILED');
process.exit(ok ? 0 : 1);
