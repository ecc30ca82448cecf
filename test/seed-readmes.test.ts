// The seed READMEs' own client examples (curl/shell, Python, JavaScript) run against one spawned `kiln serve` on
// the tiny SD1 model, as a user would run them: only the host/port is replaced, and sizes and steps are cut to
// 64 px / a few steps where the example states them (a CPU test cannot afford 1024 px). PIL is not installed here,
// so the Python examples' `Image.open(...)` lines are replaced by a check of the PNG signature. Examples that start
// the seeds' own servers (gunicorn, uvicorn, docker) or call their internal scripts (list_models.py) have no Kiln
// counterpart; the helper scripts (save_image.sh, test_api.py, generate_ssl_certs.sh, init_https.sh) are run in
// examples.test.ts.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import sharp from 'sharp';
import { tempDir } from './queue/helpers.ts';
import { spawnServer, type ServerProcess } from './server/process.ts';

const exec = promisify(execFile);
const TINY = fileURLToPath(new URL('./fixtures/tiny-sd1', import.meta.url));

let t: { dir: string; remove: () => void };
let server: ServerProcess;
before(async () => {
  t = tempDir('kiln-readmes-');
  const data = join(t.dir, 'data');
  writeFileSync(join(t.dir, 'kiln.config.json'), JSON.stringify({ modelAliases: { 'stabilityai/stable-diffusion-2-1': 'tiny-sd1', Amanatsu: 'tiny-sd1' } }));
  // The tiny model is SD1, and LayerDiffuse is SDXL-only: seed 000's routes run opaque here (its transparent
  // output is tested with the tiny SDXL and the LayerDiffuse fixtures in test/server/layerdiffuse.test.ts).
  server = await spawnServer(['--data-dir', data, '--model', TINY, '--config', join(t.dir, 'kiln.config.json'), '--seed000-transparent', 'false']);
});
after(async () => {
  server.child.kill('SIGTERM');
  await server.exited;
  t.remove();
});

/** Runs a README snippet with the seed's host:port replaced by the spawned server's. */
async function snippet(cmd: string, args: string[], code: string, hostPort: string): Promise<string> {
  const { stdout } = await exec(cmd, [...args, code.replaceAll(`http://${hostPort}`, server.url)], { cwd: t.dir, timeout: 180_000, maxBuffer: 64 << 20 });
  return stdout;
}
const bash = (code: string, hostPort: string) => snippet('bash', ['-euo', 'pipefail', '-c'], code, hostPort);
const python = (code: string, hostPort: string) => snippet('python3', ['-c'], code, hostPort);
const node = (code: string, hostPort: string) => snippet(process.execPath, ['--input-type=module', '-e'], code, hostPort);

async function isPng(file: string, size?: [number, number]): Promise<void> {
  const meta = await sharp(readFileSync(join(t.dir, file))).metadata();
  assert.equal(meta.format, 'png', file);
  if (size) assert.deepEqual([meta.width, meta.height], size, file);
}

test('seed 000: curl /runsync (Bearer key), then "Save to File" in Python and in Node.js', async () => {
  const out = await bash(
    `curl -sS -X POST "http://api.runpod.ai/v2/YOUR_ENDPOINT_ID/runsync" \\
  -H "Authorization: Bearer YOUR_API_KEY" \\
  -H "Content-Type: application/json" \\
  -d '{
    "input": {
      "prompt": "a red apple, high quality", "width": 64, "height": 64, "steps": 3
    }
  }' > response.json && cat response.json`,
    'api.runpod.ai',
  );
  const response = JSON.parse(out);
  assert.equal(response.status, 'COMPLETED');
  assert.match(response.output.filename, /^alpha_\d+_[0-9a-f-]{36}\.png$/);
  await python(
    `import base64, json
response = json.load(open("response.json"))
image_base64 = response["output"]["image_base64"]
with open("output.png", "wb") as f:
    f.write(base64.b64decode(image_base64))`,
    'api.runpod.ai',
  );
  await isPng('output.png', [64, 64]);
  await node(
    `import fs from 'node:fs';
const response = JSON.parse(fs.readFileSync('response.json', 'utf8'));
const imageBase64 = response.output.image_base64;
fs.writeFileSync('output-node.png', Buffer.from(imageBase64, 'base64'));`,
    'api.runpod.ai',
  );
  assert.deepEqual(readFileSync(join(t.dir, 'output-node.png')), readFileSync(join(t.dir, 'output.png')));
});

test('seed 001: the cURL and Python clients (Kiln size extension: 64x64, 2 steps)', async () => {
  const out = await bash(
    `curl -sS -X POST "http://localhost:8000/generate" \\
  -H "Content-Type: application/json" \\
  -d '{
    "prompts": ["baroque oil painting, dramatic chiaroscuro lighting, a weathered stone tablet with ancient text"],
    "negative_prompt": "modern, low quality",
    "return_format": "base64", "width": 64, "height": 64, "steps": 2
  }'`,
    'localhost:8000',
  );
  const body = JSON.parse(out);
  assert.equal(body.success, true);
  assert.equal(body.images.length, 1);
  const printed = await python(
    `import requests
import base64

API_URL = "http://localhost:8000/generate"
payload = {
    "prompts": [
        "baroque oil painting, dramatic chiaroscuro lighting, ancient philosopher contemplating mortality, dark background"
    ],
    "negative_prompt": "modern, photograph, cartoon, anime",
    "return_format": "base64", "width": 64, "height": 64, "steps": 2
}
response = requests.post(API_URL, json=payload)
data = response.json()
for i, img_base64 in enumerate(data["images"]):
    img_data = base64.b64decode(img_base64)
    assert img_data[:8] == b"\\x89PNG\\r\\n\\x1a\\n"
    open(f"output_{i}.png", "wb").write(img_data)
    print(f"Saved output_{i}.png")`,
    'localhost:8000',
  );
  assert.equal(printed.trim(), 'Saved output_0.png');
  await isPng('output_0.png', [64, 64]);
});

test('seed 002: curl /health, the jq pipeline and the grep/sed pipeline without jq (64x64)', async () => {
  assert.equal(JSON.parse(await bash('curl -sS http://localhost:8080/health', 'localhost:8080')).status, 'healthy');
  await bash(
    `curl -sS -X POST http://localhost:8080/generate \\
  -H "Content-Type: application/json" \\
  -d '{
    "prompt": "a detailed portrait of a cat wearing a hat",
    "steps": 3,
    "width": 64,
    "height": 64,
    "guidance_scale": 8.0,
    "seed": 12345
  }' | jq -r '.image' | sed 's/data:image\\/png;base64,//' | base64 -d > cat_portrait.png`,
    'localhost:8080',
  );
  await isPng('cat_portrait.png', [64, 64]);
  await bash(
    `curl -sS -X POST http://localhost:8080/generate \\
  -H "Content-Type: application/json" \\
  -d '{
    "prompt": "a simple flower",
    "steps": 3,
    "width": 64,
    "height": 64
  }' | grep -o '"image":"[^"]*"' | sed 's/"image":"//g' | sed 's/"$//g' | sed 's/data:image\\/png;base64,//g' | base64 -d > flower.png`,
    'localhost:8080',
  );
  await isPng('flower.png', [64, 64]);
});

test('seed 003: the Python text-to-image (count_returned 4; 64 px, 4 steps) and image-to-image (upload size kept) examples', async () => {
  const printed = await python(
    `import requests
from io import BytesIO

headers = {"X-API-Key": "your-api-key"}
response = requests.post(
    "http://localhost:1234/post_config",
    headers=headers,
    params={
        "prompt": "A serene mountain landscape, oil painting style",
        "model_id": "stabilityai/stable-diffusion-2-1",
        "num_inference_steps": 4,
        "guidance_scale": 7.5,
        "width": 64,
        "height": 64,
        "count_returned": 4,
        "seed": 42
    }
)
assert response.content[:8] == b"\\x89PNG\\r\\n\\x1a\\n", response.text[:300]
open("grid.png", "wb").write(response.content)
print(response.status_code)`,
    'localhost:1234',
  );
  assert.equal(printed.trim(), '200');
  await isPng('grid.png', [128, 128]);

  await sharp({ create: { width: 90, height: 75, channels: 3, background: '#d08020' } })
    .jpeg()
    .toFile(join(t.dir, 'input.jpg'));
  const status = await python(
    `import requests
files = {'image': ('input.jpg', open('input.jpg', 'rb'), 'multipart/form-data')}
response = requests.post(
    "http://localhost:1234/post_config",
    params={
        "prompt": "Make it sunset",
        "model_id": "stabilityai/stable-diffusion-2-1",
        "num_inference_steps": 20
    },
    files=files
)
open("sunset.png", "wb").write(response.content)
print(response.status_code, "" if response.ok else response.text[:500])`,
    'localhost:1234',
  );
  assert.equal(status.trim(), '200');
  await isPng('sunset.png', [88, 72]); // diffusers rounds the upload down to multiples of 8
});

test('seed 004: curl /models/aliases, POST /txt2img, poll /queue/{id}, then fetch output_path', async () => {
  const aliases = JSON.parse(await bash('curl -sS http://localhost:8000/models/aliases', 'localhost:8000'));
  assert.equal(aliases.status, 'success');
  const queued = JSON.parse(
    await bash(
      `curl -sS -X POST http://localhost:8000/txt2img -H "Content-Type: application/json" -d '{
    "prompt": "a beautiful anime girl", "negative_prompt": "ugly, blurry", "steps": 3, "width": 64, "height": 64,
    "model": "Amanatsu", "sampler_name": "DPM++ 2M Karras", "scheduler_type": "karras", "fileType": "jpg", "jpeg_quality": 85, "seed": 123456789
  }'`,
      'localhost:8000',
    ),
  );
  assert.equal(queued.status, 'queued');
  const done = JSON.parse(
    await bash(
      `for i in $(seq 1 600); do
  r=$(curl -sS http://localhost:8000/queue/${queued.job_id})
  case $r in *'"state":"done"'*|*'"state":"error"'*) printf '%s' "$r"; exit 0 ;; esac
  sleep 0.2
done
exit 1`,
      'localhost:8000',
    ),
  );
  assert.equal(done.state, 'done', JSON.stringify(done).slice(0, 300));
  assert.equal(done.seed, 123456789);
  await bash(`curl -sSf http://localhost:8000/${done.output_path} > saved.jpg`, 'localhost:8000');
  assert.deepEqual(readFileSync(join(t.dir, 'saved.jpg')), Buffer.from(done.image, 'base64'));
});
