// A full disk, for real: `kiln serve` on a small tmpfs data directory that the test fills up. Submitting answers
// 507 saying the disk is full (native and compat surfaces alike), the server never exits, the running job fails
// with the storage reason, and once space is freed the queued jobs run: nothing accepted is lost.
// Mounting needs root (CI runs as root); without it the test is skipped with the reason.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { closeSync, mkdirSync, mkdtempSync, openSync, readdirSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { addFakeModel, FAKE_ENGINE_MODULE } from './helpers.ts';
import { json, spawnServer, waitUntil } from './process.ts';

/** A fresh tmpfs of `size` on a new folder, or the reason it cannot be had here. */
function mountTmpfs(size: string): { dir: string; unmount: () => void } | { why: string } {
  if (process.platform !== 'linux') return { why: 'tmpfs mounts need Linux' };
  const dir = mkdtempSync(join(tmpdir(), 'kiln-full-'));
  const r = spawnSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', dir], { encoding: 'utf8' });
  if (r.status !== 0) {
    rmSync(dir, { recursive: true, force: true });
    return { why: `cannot mount a tmpfs (needs root or CAP_SYS_ADMIN): ${(r.stderr || r.error?.message || `exit ${r.status}`).trim()}` };
  }
  return {
    dir,
    unmount: () => {
      spawnSync('umount', ['-l', dir]);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Writes `file` until the disk refuses (ENOSPC); returns the bytes written. */
function fillDisk(file: string): number {
  const fd = openSync(file, 'w');
  const block = Buffer.alloc(64 * 1024, 1);
  let written = 0;
  try {
    for (;;) written += writeSync(fd, block);
  } catch (e) {
    assert.equal((e as NodeJS.ErrnoException).code, 'ENOSPC');
  }
  // The last partial block: leave not even a few KB free.
  try {
    for (;;) written += writeSync(fd, block.subarray(0, 512));
  } catch {
    /* full */
  } finally {
    closeSync(fd);
  }
  return written;
}

const tiny = { width: 64, height: 64 };

test('disk full: 507 on submit, no exit, the running job fails with the reason, jobs resume once space is freed', async (t) => {
  const mount = mountTmpfs('8m');
  if ('why' in mount) {
    t.skip(mount.why);
    return;
  }
  const dir = join(mount.dir, 'data');
  mkdirSync(dir);
  addFakeModel(dir);
  const s = await spawnServer(['--data-dir', dir, '--model', 'fake-model'], { KILN_ENGINE_MODULE: FAKE_ENGINE_MODULE, KILN_FAKE_STEP_MS: '20' });
  const submit = (body: object) => json(`${s.url}/v1/jobs`, { method: 'POST', body: JSON.stringify({ prompt: 'x', ...tiny, ...body }) });
  const job = async (id: string) => (await json(`${s.url}/v1/jobs/${id}`)).body;
  const filler = join(mount.dir, 'filler');
  try {
    // Before: one job through, so there is a result on disk to keep.
    const before = (await submit({ steps: 2 })).body.id as string;
    await waitUntil(async () => ((await job(before)).state === 'succeeded' ? true : undefined), 15_000, 'the first job');

    // A long job running, one queued behind it, then the disk fills up.
    const running = (await submit({ steps: 150 })).body.id as string;
    await waitUntil(async () => ((await job(running)).step > 0 ? true : undefined), 15_000, 'the long job sampling');
    const queued = (await submit({ steps: 2 })).body.id as string;
    assert.ok(fillDisk(filler) > 0);

    const refused = await submit({ steps: 2 });
    assert.equal(refused.status, 507, JSON.stringify(refused.body));
    assert.equal(refused.body.error.code, 'storage_full');
    assert.match(refused.body.error.message, /disk is full .*free space/);
    // Every surface maps it the same way (shared error mapping), e.g. the A1111 one.
    const a1111 = await json(`${s.url}/sdapi/v1/txt2img`, { method: 'POST', body: JSON.stringify({ prompt: 'x', ...tiny, steps: 2 }) });
    assert.equal(a1111.status, 507, JSON.stringify(a1111.body));

    // The running job finishes sampling and cannot store its image; the server stays up all the while.
    await waitUntil(async () => ((await job(running)).step === 150 ? true : undefined), 30_000, 'the long job to finish sampling');
    for (let i = 0; i < 10; i++) {
      assert.equal((await fetch(`${s.url}/health`)).status, 200);
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.equal(s.child.exitCode, null, 'the server is still running');

    // Space is freed: the running job is recorded as failed with the reason, the queued one runs, new ones too.
    rmSync(filler);
    const failed = await waitUntil(
      async () => {
        const j = await job(running);
        return j.state === 'failed' ? j : undefined;
      },
      15_000,
      'the long job to fail',
    );
    assert.equal(failed.error.code, 'storage');
    assert.match(failed.error.message, /disk is full \(ENOSPC\).*result could not be stored/);
    await waitUntil(async () => ((await job(queued)).state === 'succeeded' ? true : undefined), 15_000, 'the queued job');
    const after = await submit({ steps: 2 });
    assert.equal(after.status, 202);
    await waitUntil(async () => ((await job(after.body.id)).state === 'succeeded' ? true : undefined), 15_000, 'a new job');

    // Nothing lost: every accepted job is listed, each result readable, and no temp or orphan file is left.
    const listed = new Set(((await json(`${s.url}/v1/jobs`)).body.jobs as Array<{ id: string }>).map((j) => j.id));
    for (const id of [before, running, queued, after.body.id]) assert.ok(listed.has(id), id);
    for (const id of [before, queued, after.body.id]) {
      const image = await fetch(`${s.url}/v1/images/${id}-0.png`);
      assert.equal(image.status, 200, id);
    }
    const images = readdirSync(join(dir, 'images'));
    assert.deepEqual(
      images.filter((n) => n.endsWith('.tmp') || n.startsWith(running)),
      [],
    );
    assert.equal(s.child.exitCode, null);
  } finally {
    s.child.kill('SIGKILL');
    await s.exited;
    mount.unmount();
  }
});
