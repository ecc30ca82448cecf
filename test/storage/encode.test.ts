import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { encodeImage, readInfotext } from '../../src/storage/encode.ts';
import { addPngText, crc32, readPngText } from '../../src/storage/png-text.ts';
import { LocalImageStore } from '../../src/storage/local.ts';
import { StorageNameError } from '../../src/storage/image-store.ts';
import type { RawImage } from '../../src/engine/api.ts';

function gradient(width: number, height: number, channels: 3 | 4): RawImage {
  const data = new Uint8Array(width * height * channels);
  for (let i = 0; i < data.length; i++) data[i] = (i * 7) % 256;
  return { data, width, height, channels };
}

const INFOTEXT = 'a lighthouse, (clouds:1.2)\nNegative prompt: blurry\nSteps: 20, Sampler: Euler, Seed: 42, Size: 16x8';

test('crc32 matches the standard check value', () => {
  assert.equal(crc32(Buffer.from('123456789')), 0xcbf43926);
});

test('PNG keeps pixels and carries the parameters tEXt chunk', async () => {
  const img = gradient(16, 8, 3);
  const png = await encodeImage(img, { format: 'png', infotext: INFOTEXT });
  assert.equal(readPngText(png).parameters, INFOTEXT);
  assert.equal(await readInfotext(png), INFOTEXT);
  const { data, info } = await sharp(png).raw().toBuffer({ resolveWithObject: true });
  assert.deepEqual([info.width, info.height, info.channels], [16, 8, 3]);
  assert.deepEqual(new Uint8Array(data), img.data);
});

test('PNG with non-Latin-1 text uses iTXt and round-trips', async () => {
  const text = 'café 猫 🐈\nSteps: 5, Sampler: Euler, Seed: 1';
  const png = await encodeImage(gradient(8, 8, 4), { format: 'png', infotext: text });
  assert.ok(png.includes(Buffer.from('iTXt')));
  assert.equal(readPngText(png).parameters, text);
  // libpng (through sharp) must still accept the file, i.e. the CRC is right.
  assert.equal((await sharp(png).metadata()).width, 8);
});

test('a corrupted text chunk CRC is detected', async () => {
  const png = Buffer.from(addPngText(await encodeImage(gradient(8, 8, 3), { format: 'png' }), 'parameters', 'x'));
  const at = png.indexOf(Buffer.from('tEXt'));
  png[at + 6]! ^= 0xff;
  assert.throws(() => readPngText(png), /bad CRC/);
});

for (const format of ['jpeg', 'webp'] as const) {
  test(`${format} carries the parameters in EXIF UserComment (Unicode) and decodes`, async () => {
    const text = `${INFOTEXT}, Model: café`;
    const file = await encodeImage(gradient(16, 8, 4), { format, quality: 80, infotext: text });
    assert.equal(await readInfotext(file), text);
    const meta = await sharp(file).metadata();
    assert.equal(meta.format, format);
    assert.deepEqual([meta.width, meta.height], [16, 8]);
    await sharp(file).raw().toBuffer();
  });
}

test('quality changes JPEG size', async () => {
  const img = gradient(64, 64, 3);
  const low = await encodeImage(img, { format: 'jpeg', quality: 10 });
  const high = await encodeImage(img, { format: 'jpeg', quality: 95 });
  assert.ok(low.length < high.length, `${low.length} < ${high.length}`);
});

test('storage refuses names that could escape its folder', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'kiln-storage-'));
  try {
    const s = new LocalImageStore(dir);
    await s.write('a-1.png', Buffer.from('x'));
    assert.deepEqual(await s.read('a-1.png'), Buffer.from('x'));
    assert.equal(await s.read('missing.png'), undefined);
    for (const bad of ['../etc/passwd', '..', 'a/b.png', 'a\\b.png', '.hidden', '', 'x..png', '%2e%2e', 'a\0b']) {
      await assert.rejects(() => s.read(bad), StorageNameError, bad);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
