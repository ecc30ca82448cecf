// Starts `kiln worker` as a real child process (bin/kiln.js) on a Redis queue, for the scale-out tests.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { waitUntil } from '../server/process.ts';

const BIN = fileURLToPath(new URL('../../bin/kiln.js', import.meta.url));
export const TINY_SD1 = fileURLToPath(new URL('../fixtures/tiny-sd1', import.meta.url));

export interface WorkerProcess {
  child: ChildProcess;
  dataDir: string;
  output: () => string;
  exited: Promise<number | null>;
}

/** A worker with its own data dir, logging at info (one JSON line per job event); resolves once it takes jobs. */
export async function spawnWorker(redisUrl: string, dataDir: string, args: string[] = []): Promise<WorkerProcess> {
  mkdirSync(dataDir, { recursive: true });
  const child = spawn(process.execPath, [BIN, 'worker', '--queue', redisUrl, '--data-dir', dataDir, '--log-level', 'info', ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, KILN_TEST_GRAPH_CACHE: '' },
  });
  let out = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (out += d));
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  const w = { child, dataDir, output: () => out, exited };
  await waitUntil(async () => (out.includes('taking jobs from') ? true : undefined), 60_000, `worker to start:\n${out}`);
  return w;
}

/** Job ids a worker's log says it completed (logged only once the finish was recorded). */
export function completions(w: WorkerProcess): string[] {
  return w
    .output()
    .split('\n')
    .filter((l) => l.includes('"job succeeded"'))
    .map((l) => JSON.parse(l).jobId as string);
}
