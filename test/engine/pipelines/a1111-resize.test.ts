import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { PIL_UPSCALERS, resizeImage } from '../../../src/engine/pipelines/a1111-resize.ts';
import { SafetensorsFile } from '../../../src/engine/weights/safetensors.ts';
import { FIXTURES } from '../nets/fixture-io.ts';

const file = SafetensorsFile.open(join(FIXTURES, 'refs', 'hires', 'pil_resize.safetensors'));
const image = { data: file.readBytes('image'), width: 40, height: 32, channels: 3 as const };

for (const [key, mode, w, h, upscaler] of [
  ['none_80x64', 0, 80, 64, undefined],
  ['none_60x48', 0, 60, 48, undefined],
  ['none_24x20', 0, 24, 20, undefined],
  ['lanczos_80x64', 0, 80, 64, 'Lanczos'],
  ['lanczos_60x48', 0, 60, 48, 'Lanczos'],
  ['nearest_60x48', 0, 60, 48, 'Nearest'],
  ['crop_48x48', 1, 48, 48, undefined],
  ['fill_48x48', 2, 48, 48, undefined],
  ['fill_64x32', 2, 64, 32, undefined],
] as const) {
  test(`A1111 resize_image(${mode}, ${w}x${h}, upscaler ${upscaler ?? 'None'}) equals Pillow's pixels exactly (${key})`, async () => {
    const out = await resizeImage(mode, image, w, h, upscaler ? PIL_UPSCALERS[upscaler] : undefined);
    assert.deepEqual([out.width, out.height], [w, h]);
    const expected = file.readBytes(key);
    let diff = 0;
    for (let i = 0; i < expected.length; i++) if (out.data[i] !== expected[i]) diff++;
    assert.equal(diff, 0, `${diff} of ${expected.length} values differ`);
  });
}
