// The one downloader against a local server speaking the Hugging Face Hub's and Civitai's shapes: downloads into
// the standard HF cache layout (found again by @huggingface/hub's scanCacheDir, no second transfer), resumes an
// interrupted transfer with a Range request, refuses a bad checksum, bounds redirects and size, keeps the token
// away from redirected hosts, and resolves Civitai ids, version ids, URLs and names.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes, createHash } from 'node:crypto';
import { existsSync, lstatSync, readFileSync, readlinkSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { scanCacheDir } from '@huggingface/hub';
import { DownloadError, downloadFile } from '../../src/download/fetch-file.ts';
import { cachedSnapshot, downloadHubFile, ensureDiffusersRepo, listCachedRepos } from '../../src/download/hf-hub.ts';
import { parseCivitaiRef } from '../../src/download/civitai.ts';
import { parsePullSpec, pull, PullError } from '../../src/server/models/pull.ts';
import { tempDir } from '../queue/helpers.ts';
import { startHubServer, type HubServer } from './hub-server.ts';

const FIX = 'test/fixtures/tiny-sdxl';
const fixtureFiles = (names: string[]) => Object.fromEntries(names.map((n) => [n, readFileSync(join(FIX, n))]));
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const BIG = randomBytes(300_000);
const LORA = readFileSync('test/fixtures/loras/tiny-sd1-kohya.safetensors');

let hub: HubServer;
const tmp = tempDir('kiln-download-');
before(async () => {
  hub = await startHubServer(
    {
      'acme/tiny-sdxl': {
        commit: 'a'.repeat(40),
        files: fixtureFiles([
          'model_index.json',
          'unet/config.json',
          'unet/diffusion_pytorch_model.safetensors',
          'vae/config.json',
          'vae/diffusion_pytorch_model.safetensors',
        ]),
      },
      'acme/loras': {
        commit: 'b'.repeat(40),
        files: { 'big.safetensors': BIG, 'liar.safetensors': randomBytes(1000), 'README.md': Buffer.from('# loras\n') },
        badSha: { 'liar.safetensors': 'c'.repeat(64) },
      },
    },
    [
      {
        id: 4001,
        name: 'Pixel Art Style',
        type: 'LORA',
        allowCommercialUse: ['Image'],
        versions: [{ id: 5001, name: 'v1', baseModel: 'SD 1.5', trainedWords: ['pixel_art_style'], fileName: 'pixelArt_v1.safetensors', bytes: LORA }],
      },
      {
        id: 4002,
        name: 'Bad Hash',
        type: 'LORA',
        versions: [{ id: 5002, name: 'v1', baseModel: 'SDXL 1.0', trainedWords: [], fileName: 'bad.safetensors', bytes: LORA, sha256: 'd'.repeat(64) }],
      },
    ],
  );
});
after(async () => {
  await hub.close();
  tmp.remove();
});

test('HF repo: a diffusers pipeline lands in the standard cache layout and is found again without a transfer', async () => {
  const cacheDir = join(tmp.dir, 'hf1');
  const progress: number[] = [];
  const snap = await ensureDiffusersRepo('acme/tiny-sdxl', { cacheDir, endpoint: hub.url, onProgress: (p) => progress.push(p.received) });
  assert.equal(snap, join(cacheDir, 'models--acme--tiny-sdxl', 'snapshots', 'a'.repeat(40)));
  assert.equal(readFileSync(join(cacheDir, 'models--acme--tiny-sdxl', 'refs', 'main'), 'utf8'), 'a'.repeat(40));
  const unet = join(snap, 'unet', 'diffusion_pytorch_model.safetensors');
  assert.ok(lstatSync(unet).isSymbolicLink());
  const blobName = readlinkSync(unet).split('/').pop()!;
  assert.equal(blobName, sha(readFileSync(join(FIX, 'unet/diffusion_pytorch_model.safetensors'))), 'LFS blobs are named by their sha256');
  assert.deepEqual(readFileSync(unet), readFileSync(join(FIX, 'unet/diffusion_pytorch_model.safetensors')));
  assert.ok(progress.length > 0);
  // @huggingface/hub (what other JS tools read) sees the same repo and files.
  const scan = await scanCacheDir(cacheDir);
  assert.deepEqual(
    scan.repos.map((r) => r.id.name),
    ['acme/tiny-sdxl'],
  );
  assert.equal(scan.repos[0]!.revisions[0]!.commitOid, 'a'.repeat(40));
  assert.deepEqual(scan.repos[0]!.revisions[0]!.refs, ['main']);
  assert.deepEqual(listCachedRepos({ cacheDir }), [{ repo: 'acme/tiny-sdxl', snapshot: snap }]);
  const before = hub.requests.length;
  assert.equal(await ensureDiffusersRepo('acme/tiny-sdxl', { cacheDir, endpoint: hub.url }), snap);
  assert.equal(hub.requests.length, before, 'a cached repo costs no request');
});

test('resume: an interrupted transfer keeps its partial blob, and the next call continues it with a Range request', async () => {
  const cacheDir = join(tmp.dir, 'hf2');
  hub.cutAfter = 100_000;
  await assert.rejects(downloadHubFile('acme/loras', 'big.safetensors', { cacheDir, endpoint: hub.url }), (e: unknown) => {
    assert.ok(e instanceof DownloadError);
    assert.equal(e.code, 'network');
    assert.match(e.message, /run it again to resume/);
    return true;
  });
  const incomplete = join(cacheDir, 'models--acme--loras', 'blobs', `${sha(BIG)}.incomplete`);
  const kept = statSync(incomplete).size;
  assert.ok(kept > 0 && kept < BIG.length, `partial ${kept}`);
  const p = await downloadHubFile('acme/loras', 'big.safetensors', { cacheDir, endpoint: hub.url });
  assert.deepEqual(readFileSync(p), BIG);
  assert.ok(!existsSync(incomplete));
  const ranged = hub.requests.filter((r) => r.range);
  assert.equal(ranged.at(-1)!.range, `bytes=${kept}-`);
  assert.equal(cachedSnapshot('acme/loras', { cacheDir }), join(cacheDir, 'models--acme--loras', 'snapshots', 'b'.repeat(40)));
});

test('a bad checksum is refused and nothing is kept', async () => {
  const cacheDir = join(tmp.dir, 'hf3');
  await assert.rejects(downloadHubFile('acme/loras', 'liar.safetensors', { cacheDir, endpoint: hub.url }), (e: unknown) => {
    assert.ok(e instanceof DownloadError);
    assert.equal(e.code, 'checksum');
    assert.match(e.message, /does not match the published c{64}/);
    return true;
  });
  const blobs = join(cacheDir, 'models--acme--loras', 'blobs');
  assert.ok(!existsSync(join(blobs, 'c'.repeat(64))) && !existsSync(join(blobs, `${'c'.repeat(64)}.incomplete`)));
});

test('plain URLs: size bound, wrong expected size, redirect loop, 404', async () => {
  const dest = join(tmp.dir, 'plain', 'x.bin');
  const url = `${hub.url}/cdn/${sha(BIG)}`;
  await assert.rejects(downloadFile({ url, dest, maxBytes: 1000 }), /more than the limit of 1000/);
  await assert.rejects(downloadFile({ url, dest, expectedSize: 5 }), (e: unknown) => (e as DownloadError).code === 'size');
  assert.ok(!existsSync(dest));
  await assert.rejects(downloadFile({ url: `${hub.url}/nope`, dest }), /HTTP 404/);
  const got = await downloadFile({ url, dest, expectedSha256: sha(BIG).toUpperCase() });
  assert.equal(got.sha256, sha(BIG));
  assert.equal(got.resumedFrom, 0);
  const loop = await startLoopServer();
  await assert.rejects(downloadFile({ url: loop.url, dest: join(tmp.dir, 'loop.bin'), maxRedirects: 3 }), /more than 3 redirects/);
  await loop.close();
});

test('Civitai: ids, version URLs and names resolve through the API; the key reaches civitai but not the storage host; SHA256 checked', async () => {
  assert.deepEqual(parseCivitaiRef('4001'), { modelId: 4001 });
  assert.deepEqual(parseCivitaiRef('https://civitai.com/models/4001/pixel-art?modelVersionId=5001'), { modelId: 4001, versionId: 5001 });
  assert.deepEqual(parseCivitaiRef('https://civitai.com/api/download/models/5001'), { versionId: 5001 });
  assert.deepEqual(parseCivitaiRef('urn:air:sd1:lora:civitai:4001@5001'), { modelId: 4001, versionId: 5001 });
  assert.deepEqual(parseCivitaiRef('pixel_art_style'), { query: 'pixel_art_style' });
  assert.deepEqual(parsePullSpec('civitai:4001@5001').sources, [{ type: 'civitai', ref: { modelId: 4001, versionId: 5001 } }]);
  assert.deepEqual(parsePullSpec('acme/loras:big.safetensors').sources, [{ type: 'hf', repo: 'acme/loras', file: 'big.safetensors' }]);
  assert.equal(parsePullSpec('realesrgan-x4').kind, 'upscaler');
  assert.throws(() => parsePullSpec('http://example.com/x.safetensors'), PullError);
  assert.throws(() => parsePullSpec('acme/loras:../x'), PullError);

  hub.civitaiKey = 'sekrit';
  process.env.CIVIT_KEY = 'sekrit';
  try {
    const folders = join(tmp.dir, 'kiln-models');
    // A bare number is a model id (as seed 003's lora_list.json model_id).
    await assert.rejects(pull('5001', { folderFor: (k) => join(folders, k), civitaiEndpoint: hub.url }), /Civitai \/api\/v1\/models\/5001: not found/);
    const start = hub.requests.length;
    const [got] = await pull('civitai:4001@5001', { folderFor: (k) => join(folders, k), civitaiEndpoint: hub.url });
    assert.equal(got!.kind, 'lora');
    assert.equal(got!.family, 'sd1');
    assert.deepEqual(readFileSync(got!.path), LORA);
    assert.equal(got!.path, join(folders, 'lora', 'pixelArt_v1.safetensors'));
    const seen = hub.requests.slice(start);
    assert.ok(seen.filter((r) => r.url.startsWith('/api/')).every((r) => r.authorization === 'Bearer sekrit'));
    const storage = seen.filter((r) => r.url.startsWith('/storage/'));
    assert.equal(storage.length, 1);
    assert.equal(storage[0]!.authorization, undefined, 'the signed storage URL gets no key');
    const [byName] = await pull('civitai:Pixel Art Style', {
      folderFor: (k) => join(folders, k),
      civitaiEndpoint: hub.url,
      kind: 'lora',
      name: 'pixel_art_style',
    });
    assert.equal(byName!.path, join(folders, 'lora', 'pixel_art_style.safetensors'));
    await assert.rejects(pull('4002', { folderFor: (k) => join(folders, k), civitaiEndpoint: hub.url }), /sha256 .* does not match the published d{64}/);
    assert.ok(!existsSync(join(folders, 'lora', 'bad.safetensors')));
  } finally {
    hub.civitaiKey = undefined;
    delete process.env.CIVIT_KEY;
  }
});

test('civitai without the key: 401 is explained', async () => {
  hub.civitaiKey = 'needed';
  try {
    await assert.rejects(pull('4001', { folderFor: (k) => join(tmp.dir, 'k2', k), civitaiEndpoint: hub.url }), /not allowed \(set CIVIT_KEY\)/);
  } finally {
    hub.civitaiKey = undefined;
  }
});

test('HF single file with --kind: cached in the HF cache, linked into the kind folder', async () => {
  const cacheDir = join(tmp.dir, 'hf4');
  const [got] = await pull('acme/loras:big.safetensors', { folderFor: (k) => join(tmp.dir, 'k3', k), hfCacheDir: cacheDir, hfEndpoint: hub.url, kind: 'lora' });
  assert.equal(got!.path, join(tmp.dir, 'k3', 'lora', 'big.safetensors'));
  assert.ok(lstatSync(got!.path).isSymbolicLink());
  assert.deepEqual(readFileSync(got!.path), BIG);
});

async function startLoopServer() {
  const { createServer } = await import('node:http');
  const server = createServer((req, res) => res.writeHead(302, { location: `/again${req.url}` }).end());
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as import('node:net').AddressInfo).port;
  return { url: `http://127.0.0.1:${port}/start`, close: () => new Promise<void>((r) => server.close(() => r())) };
}

test('kiln pull (the command): an interrupted download exits 1 saying how to resume; the rerun resumes; a bad checksum exits 1', async () => {
  const { spawn } = await import('node:child_process');
  const bin = new URL('../../bin/kiln.js', import.meta.url).pathname;
  const dataDir = join(tmp.dir, 'cli');
  const run = (args: string[]) =>
    new Promise<{ code: number | null; out: string }>((resolve) => {
      const child = spawn(process.execPath, [bin, 'pull', ...args, '--data-dir', dataDir, '--hf-cache', join(dataDir, 'hf'), '--hf-endpoint', hub.url], {
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let out = '';
      child.stdout.on('data', (d) => (out += d));
      child.stderr.on('data', (d) => (out += d));
      child.once('exit', (code) => resolve({ code, out }));
    });
  hub.cutAfter = 150_000;
  const first = await run(['acme/loras:big.safetensors', '--kind', 'lora']);
  assert.equal(first.code, 1, first.out);
  assert.match(first.out, /the partial file is kept; run the same command again to resume/);
  const before = hub.requests.length;
  const second = await run(['acme/loras:big.safetensors', '--kind', 'lora']);
  assert.equal(second.code, 0, second.out);
  assert.match(second.out, /lora big: .*big\.safetensors/);
  assert.ok(
    hub.requests.slice(before).some((r) => r.range !== undefined && /^bytes=\d+-$/.test(r.range)),
    'the rerun asked for the rest only',
  );
  assert.deepEqual(readFileSync(join(dataDir, 'models', 'loras', 'big.safetensors')), BIG);
  const bad = await run(['acme/loras:liar.safetensors', '--kind', 'lora']);
  assert.equal(bad.code, 1);
  assert.match(bad.out, /sha256 [0-9a-f]{64} does not match the published c{64}/);
});
