// Face restoration through the real server and engine on tiny SD1 and the tiny face networks, copied into the models
// folder as an operator would (codeformer/, A1111's GFPGAN/, facedetect/). The tiny detector has random weights and
// finds no face, so the pixels stay as they were: these tests prove the files are found, the stage and the Extras
// passes run and are reported; the restoration's pixels are tested in test/engine/pipelines/face-restore.test.ts.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import sharp from 'sharp';
import { compatServerForFile } from './helpers.ts';

const FACES = join(import.meta.dirname, '..', '..', 'fixtures', 'tiny-faces');

const { server, post } = compatServerForFile();
const install = (file: string, folder: string) => {
  mkdirSync(join(server().config.modelsDir, folder), { recursive: true });
  copyFileSync(join(FACES, file), join(server().config.modelsDir, folder, file));
};
const TXT2IMG = { prompt: 'a portrait', steps: 2, width: 64, height: 64, seed: 5, sampler_name: 'Euler' };

test('missing face files: a 400 before queueing that names each missing file and its folder', async () => {
  install('codeformer-tiny.pth', 'codeformer');
  const before = (await server().app.inject('/v1/jobs')).json();
  const r = await post('/sdapi/v1/txt2img', { ...TXT2IMG, restore_faces: true });
  assert.equal(r.statusCode, 400, r.body);
  const detail: string = r.json().detail;
  assert.match(detail, /^restore_faces: face restoration with CodeFormer needs files that are not installed/);
  assert.match(detail, /detection_Resnet50_Final\.pth\) in models\/facedetect\//);
  assert.match(detail, /parsing_parsenet\.pth\) in models\/facedetect\//);
  assert.doesNotMatch(detail, /codeformer-v0\.1\.0/, 'the CodeFormer file is there');
  assert.deepEqual((await server().app.inject('/v1/jobs')).json(), before, 'nothing was queued');
  const native = await post('/v1/jobs', { prompt: 'x', width: 64, height: 64, restore_faces: { model: 'GFPGAN' } });
  assert.equal(native.statusCode, 400);
  assert.equal(native.json().error.field, 'restore_faces');
  assert.match(native.json().error.message, /GFPGANv1\.4\.pth\) in models\/gfpgan\//);
  const badOption = await post('/sdapi/v1/txt2img', { ...TXT2IMG, restore_faces: true, override_settings: { face_restoration_model: 'GPEN' } });
  assert.equal(badOption.statusCode, 400);
  assert.match(badOption.json().detail, /^override_settings\.face_restoration_model: must be "CodeFormer" or "GFPGAN"/);
});

test('face-restorers lists both restorers with the folders they are read from, relative to the models folder', async () => {
  install('gfpgan-v1.4-tiny.pth', 'GFPGAN');
  install('retinaface-mobilenet0.25.safetensors', 'facedetect');
  install('parsenet.safetensors', 'facedetect');
  const r = await server().app.inject('/sdapi/v1/face-restorers');
  assert.equal(r.statusCode, 200);
  assert.deepEqual(r.json(), [
    { name: 'CodeFormer', cmd_dir: 'codeformer' },
    { name: 'GFPGAN', cmd_dir: 'GFPGAN' },
  ]);
  assert.doesNotMatch(r.body, new RegExp(server().config.modelsDir.replace(/[/\\.]/g, '\\$&')));
});

test('A1111 txt2img restore_faces runs the stage: infotext "Face restoration: CodeFormer", info names the model', async () => {
  const plain = await post('/sdapi/v1/txt2img', TXT2IMG);
  assert.equal(plain.statusCode, 200, plain.body);
  const r = await post('/sdapi/v1/txt2img', { ...TXT2IMG, restore_faces: true });
  assert.equal(r.statusCode, 200, r.body);
  const info = JSON.parse(r.json().info);
  assert.match(info.infotexts[0], /Seed: 5, Face restoration: CodeFormer, Size: 64x64/);
  assert.equal(info.face_restoration_model, 'CodeFormer');
  assert.equal(info.restore_faces, true);
  assert.doesNotMatch(JSON.parse(plain.json().info).infotexts[0], /Face restoration/);
  const pixels = async (b64: string) => (await sharp(Buffer.from(b64, 'base64')).raw().toBuffer()).toString('hex');
  assert.equal(await pixels(r.json().images[0]), await pixels(plain.json().images[0]), 'no face found: the sample is unchanged');
});

test('A1111 options face_restoration_model / code_former_weight choose the restorer; seed 000 restore_faces runs it', async () => {
  const set = await post('/sdapi/v1/options', { face_restoration_model: 'GFPGAN', code_former_weight: 0.7 });
  assert.equal(set.statusCode, 200, set.body);
  const bad = await post('/sdapi/v1/options', { code_former_weight: 3 });
  assert.equal(bad.statusCode, 422, bad.body);
  assert.match(bad.body, /code_former_weight: must be a number from 0 to 1/);
  const r = await post('/sdapi/v1/txt2img', { ...TXT2IMG, restore_faces: true });
  assert.equal(r.statusCode, 200, r.body);
  assert.match(JSON.parse(r.json().info).infotexts[0], /Face restoration: GFPGAN/);
  await post('/sdapi/v1/options', { face_restoration_model: 'CodeFormer' });
  const runpod = await post('/v2/YOUR_ENDPOINT_ID/runsync', { input: { ...TXT2IMG, restore_faces: true } });
  assert.equal(runpod.statusCode, 200, runpod.body);
  assert.equal(runpod.json().status, 'COMPLETED', runpod.body.slice(0, 300));
  assert.match(runpod.json().output.info, /Face restoration: CodeFormer/);
});

test('native restore_faces {model: "GFPGAN"} runs the GFPGAN restorer', async () => {
  const r = await post('/v1/generate', { prompt: 'a portrait', width: 64, height: 64, steps: 2, seed: 5, restore_faces: { model: 'GFPGAN' } });
  assert.equal(r.statusCode, 200, r.body);
  assert.match(r.json().images[0].infotext, /Face restoration: GFPGAN/);
});

test('extras codeformer_visibility / codeformer_weight run the restore-faces pass and write its parameters', async () => {
  const png = await sharp({ create: { width: 48, height: 40, channels: 3, background: { r: 200, g: 150, b: 120 } } })
    .png()
    .toBuffer();
  const r = await post('/sdapi/v1/extra-single-image', { image: png.toString('base64'), codeformer_visibility: 0.8, codeformer_weight: 0.3 });
  assert.equal(r.statusCode, 200, r.body);
  assert.equal(r.json().html_info, '<p>CodeFormer visibility: 0.8, CodeFormer weight: 0.3</p>');
  const out = sharp(Buffer.from(r.json().image, 'base64'));
  const meta = await out.metadata();
  assert.deepEqual([meta.width, meta.height], [48, 40]);
  const bad = await post('/sdapi/v1/extra-single-image', { image: png.toString('base64'), gfpgan_visibility: 2 });
  assert.equal(bad.statusCode, 400);
  assert.match(bad.json().detail, /^gfpgan_visibility: must be a number from 0 to 1/);
});
