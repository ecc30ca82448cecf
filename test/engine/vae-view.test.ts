// A separate VAE is a view of the loaded model (ModelPool keys models without it): the model is loaded once, the
// view shares its text-encoder and UNet sessions and has VAE sessions of its own; users are counted on the model.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ModelPool } from '../../src/engine/model-pool.ts';
import { ModelFileError } from '../../src/engine/api.ts';

const TINY = 'test/fixtures/tiny-sd1';
const VAE = join(TINY, 'vae');

test('a VAE choice is a view: one loaded model, shared UNet sessions, separate VAE sessions; a bad VAE is a ModelFileError', async () => {
  const cacheDir = mkdtempSync(join(tmpdir(), 'kiln-vae-view-'));
  const pool = new ModelPool({ device: 'cpu', cacheDir, maxLoaded: 1, idleUnloadMs: 0 });
  try {
    const plain = await pool.acquire({ path: TINY });
    const withVae = await pool.acquire({ path: TINY, vae: VAE });
    assert.equal(pool.loaded().length, 1, 'the VAE does not load the model again');
    assert.equal(withVae.root, plain, 'the view counts its users on the loaded model');
    assert.equal(plain.users, 2);
    assert.equal(await withVae.unet(), await plain.unet(), 'the UNet session is shared');
    assert.notEqual(await withVae.vaeDecoder(), await plain.vaeDecoder(), 'the VAE decoder is its own session');
    assert.equal(await pool.get({ path: TINY, vae: VAE }).then((v) => v.vaeDecoder()), await withVae.vaeDecoder(), 'views of one VAE share it');
    pool.release(withVae);
    pool.release(plain);
    assert.equal(plain.users, 0);
    await assert.rejects(pool.get({ path: TINY, vae: join(TINY, 'unet') }), ModelFileError);
  } finally {
    await pool.close();
    rmSync(cacheDir, { recursive: true, force: true });
  }
});
