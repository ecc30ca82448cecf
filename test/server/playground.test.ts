// The web playground at `/`: content negotiation against seed 001's JSON, its static assets and
// /v1/capabilities (fake engine, app.inject), then the page itself driven in Debian's Chromium through
// playwright-core against a real listening Kiln on the tiny SD1 model, behind a reverse proxy at a sub-path and
// with an API key: generate with progress and the image, a second job queued then cancelled, the gallery after a
// reload, PNG info from a dropped PNG (Kiln's and an A1111-style one), inpainting with the mask painter, an
// upscale, and a phone-width layout. Screenshots of each screen go to /tmp/ui-shots/ (or KILN_UI_SHOTS).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { createServer, request as httpRequest } from 'node:http';
import type { Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import sharp from 'sharp';
import { chromium } from 'playwright-core';
import type { Page } from 'playwright-core';
import { buildApp } from '../../src/server/app.ts';
import { testConfig } from '../../src/server/config.ts';
import { addPngText } from '../../src/storage/png-text.ts';
import { startTestServer } from './helpers.ts';

const STATIC = fileURLToPath(new URL('../../src/server/playground/static/', import.meta.url));
const TINY = fileURLToPath(new URL('../fixtures/tiny-sd1', import.meta.url));
const LORA = fileURLToPath(new URL('../fixtures/loras/tiny-sd1-kohya.safetensors', import.meta.url));
const CHROMIUM = '/usr/bin/chromium';
const SHOTS = process.env.KILN_UI_SHOTS ?? '/tmp/ui-shots';
const BROWSER_HTML_ACCEPT = 'text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8';

test('GET / answers the page to browsers and seed 001 JSON to API clients; assets and capabilities are served', async () => {
  const s = await startTestServer({ keys: [{ name: 'ui', key: 'k-1', role: 'user' }] });
  try {
    for (const accept of ['application/json', '*/*', 'text/html;q=0.5, application/json', 'application/json, text/html', undefined]) {
      const r = await s.app.inject({ url: '/', headers: accept === undefined ? {} : { accept } });
      assert.equal(r.statusCode, 200, String(accept));
      assert.equal(r.json().name, 'Kiln', `Accept ${accept} gets seed 001's JSON`);
      assert.equal(r.headers.vary, 'Accept');
    }
    const page = await s.app.inject({ url: '/', headers: { accept: BROWSER_HTML_ACCEPT } });
    assert.equal(page.statusCode, 200);
    assert.match(String(page.headers['content-type']), /^text\/html/);
    assert.match(page.body, /<script type="module" src="ui\/app\.js">/, 'relative asset URLs (works under a sub-path)');
    assert.match(String(page.headers['content-security-policy']), /default-src 'self'/);
    assert.doesNotMatch(page.body, /(src|href)="(https?:)?\/\//, 'no external resources');

    const js = await s.app.inject('/ui/app.js');
    assert.equal(js.statusCode, 200, 'assets need no key');
    assert.match(String(js.headers['content-type']), /^text\/javascript/);
    assert.equal((await s.app.inject('/ui/style.css')).statusCode, 200);
    const missing = await s.app.inject('/ui/nope.js');
    assert.equal(missing.statusCode, 404);
    assert.equal(missing.json().error.field, 'file');
    assert.equal((await s.app.inject('/ui/..%2Fapp.ts')).statusCode, 404);

    assert.equal((await s.app.inject('/v1/capabilities')).statusCode, 401, 'capabilities need the key like the other /v1 routes');
    const caps = await s.app.inject({ url: '/v1/capabilities', headers: { 'x-api-key': 'k-1' } });
    assert.equal(caps.statusCode, 200);
    const body = caps.json();
    assert.equal(body.features.loras, true);
    assert.equal(typeof body.features.transparentBackground, 'boolean');
    assert.ok(body.upscalers.hires.includes('Latent') && body.upscalers.image.includes('Lanczos'));
    assert.equal(body.limits.max_width, s.config.limits.maxWidth);
  } finally {
    await s.close();
  }
});

test('the playground bundle is small (gzipped size printed)', () => {
  const files = readdirSync(STATIC);
  const raw = files.reduce((n, f) => n + readFileSync(join(STATIC, f)).length, 0);
  const gz = files.reduce((n, f) => n + gzipSync(readFileSync(join(STATIC, f)), { level: 9 }).length, 0);
  console.log(`# playground: ${files.length} files, ${(raw / 1024).toFixed(1)} KiB, ${(gz / 1024).toFixed(1)} KiB gzipped (per file, level 9)`);
  assert.ok(gz < 40 * 1024, `gzipped ${gz} bytes`);
});

/** A reverse proxy that serves Kiln under /kiln/ (as nginx `location /kiln/ { proxy_pass http://kiln/; }`). */
function prefixProxy(target: string): Promise<{ server: Server; url: string }> {
  const t = new URL(target);
  const server = createServer((req, res) => {
    if (!req.url?.startsWith('/kiln/')) {
      res.writeHead(404).end('outside /kiln/');
      return;
    }
    const up = httpRequest(
      { host: t.hostname, port: t.port, method: req.method, path: req.url.slice('/kiln'.length), headers: { ...req.headers, host: t.host } },
      (r) => {
        res.writeHead(r.statusCode ?? 502, r.headers);
        r.pipe(res);
      },
    );
    up.on('error', () => res.destroy());
    req.pipe(up);
  });
  return new Promise((resolve) =>
    server.listen(0, '127.0.0.1', () => resolve({ server, url: `http://127.0.0.1:${(server.address() as { port: number }).port}/kiln/` })),
  );
}

async function shot(page: Page, name: string) {
  await page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });
}

/** Drops a file on an element the way a browser drag-and-drop does (a DataTransfer with one File). */
async function dropFile(page: Page, selector: string, bytes: Buffer, name: string, type = 'image/png') {
  const transfer = await page.evaluateHandle(
    ({ b64, name, type }) => {
      const data = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
      const dt = new DataTransfer();
      dt.items.add(new File([data], name, { type }));
      return dt;
    },
    { b64: bytes.toString('base64'), name, type },
  );
  await page.dispatchEvent(selector, 'drop', { dataTransfer: transfer });
}

test('playground in Chromium: generate with progress, queue and cancel, gallery after reload, PNG info, inpaint, upscale', { timeout: 300_000 }, async () => {
  // Never skipped: CI installs Debian's chromium (.ci/run), and a missing browser must fail loudly.
  assert.ok(existsSync(CHROMIUM), `${CHROMIUM} is missing: install Debian's chromium (apt-get install chromium) to run the playground test`);
  const t0 = performance.now();
  mkdirSync(SHOTS, { recursive: true });
  const dir = mkdtempSync(join(tmpdir(), 'kiln-ui-'));
  const profile = mkdtempSync(join(tmpdir(), 'kiln-ui-chromium-'));
  mkdirSync(join(dir, 'models', 'loras'), { recursive: true });
  copyFileSync(LORA, join(dir, 'models', 'loras', 'tiny-sd1-kohya.safetensors'));
  const app = await buildApp(testConfig(dir, { model: TINY, keys: [{ name: 'ui', key: 'ui-key', role: 'user' }] }));
  let proxy: Server | undefined;
  let context: Awaited<ReturnType<typeof chromium.launchPersistentContext>> | undefined;
  try {
    const kilnUrl = await app.listen({ host: '127.0.0.1', port: 0 });
    await app.kiln.engineReady;
    const p = await prefixProxy(kilnUrl);
    proxy = p.server;
    const base = p.url;
    context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
      viewport: { width: 1280, height: 800 },
      timeout: 60_000,
    });
    context.setDefaultTimeout(60_000);
    await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: new URL(base).origin });
    const page = context.pages()[0] ?? (await context.newPage());
    const errors: string[] = [];
    const outside: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));
    page.on('request', (r) => {
      const u = r.url();
      if (!u.startsWith(base) && !u.startsWith('data:') && !u.startsWith('blob:')) outside.push(u);
    });

    // The key: the page finds out the server needs one and asks for it.
    await page.goto(base);
    await page.waitForSelector('#key-form:not([hidden])');
    await shot(page, '01-api-key');
    await page.fill('#api-key', 'ui-key');
    await page.click('#key-form button[type=submit]');
    await page.waitForSelector('body[data-ready]');
    assert.equal(await page.inputValue('#model'), 'tiny-sd1');
    assert.ok((await page.$$eval('#sampler option', (o) => o.map((x) => (x as HTMLOptionElement).value))).includes('DPM++ 2M'));
    assert.ok(await page.isVisible('#lora-pick'), 'the LoRA picker shows the models/loras files');
    assert.equal(
      await page.isVisible('#transparent-toggle'),
      (await app.inject({ url: '/v1/capabilities', headers: { 'x-api-key': 'ui-key' } })).json().features.transparentBackground,
    );

    // Job A with Ctrl+Enter, then job B (long) queued behind it.
    await page.fill('#prompt', 'a red (apple:1.2), [blurry]');
    await page.fill('input[name=width]', '64');
    await page.fill('input[name=height]', '64');
    await page.fill('input[name=steps]', '12');
    await page.fill('input[name=seed]', '4242');
    assert.deepEqual(
      await page.$$eval('.hl-back:has(+ #prompt) span', (s) => s.map((e) => `${e.className}${e.textContent}`)),
      ['d0(', 'weight:1.2', 'd0)', 'd0[', 'd0]'],
      'emphasis is highlighted',
    );
    await page.focus('#prompt');
    await page.keyboard.press('Control+Enter');
    const jobA = await (await page.waitForSelector('.job[data-job-id]')).getAttribute('data-job-id');
    await page.fill('input[name=steps]', '150');
    await page.fill('input[name=seed]', '-1');
    await page.click('#generate');
    await page.waitForFunction(() => document.querySelectorAll('.job[data-job-id]').length === 2);
    const jobB = await page.$eval('.job', (e) => (e as HTMLElement).dataset.jobId);
    assert.notEqual(jobA, jobB);
    await page.waitForSelector(`.job[data-job-id="${jobB}"][data-state=queued]`, { timeout: 10_000 });
    await shot(page, '02-queue');

    // A finishes: progress was shown step by step, then the image.
    await page.waitForSelector(`.job[data-job-id="${jobA}"][data-state=succeeded] img.result`);
    const a = await page.$eval(`.job[data-job-id="${jobA}"]`, (e) => ({ maxStep: Number((e as HTMLElement).dataset.maxStep), info: e.textContent ?? '' }));
    assert.ok(a.maxStep >= 1, `job A showed progress (max step ${a.maxStep})`);
    const imgA = await page.$eval(`.job[data-job-id="${jobA}"] img.result`, (i) => ({
      w: (i as HTMLImageElement).naturalWidth,
      done: (i as HTMLImageElement).complete,
    }));
    assert.deepEqual(imgA, { w: 64, done: true });

    // B runs: step, phase, ETA and a live preview, then it is cancelled from its card.
    await page.waitForFunction((id) => Number(document.querySelector<HTMLElement>(`.job[data-job-id="${id}"]`)?.dataset.maxStep) >= 3, jobB);
    await page.waitForSelector(`.job[data-job-id="${jobB}"] .preview:not([hidden])`);
    const info = await page.textContent(`.job[data-job-id="${jobB}"] .job-info`);
    assert.match(info ?? '', /step \d+\/150 · sampling · \d+% · ETA/);
    await shot(page, '03-progress');
    await page.click(`.job[data-job-id="${jobB}"] .cancel`);
    await page.waitForSelector(`.job[data-job-id="${jobB}"][data-state=cancelled]`);
    await shot(page, '04-cancelled');

    // Reload: A is in the gallery with its parameters; B made no image.
    await page.reload();
    await page.waitForSelector('body[data-ready]');
    assert.equal(await page.inputValue('#prompt'), 'a red (apple:1.2), [blurry]', 'the form is kept, emphasis syntax untouched');
    await page.click('[data-tab=gallery]');
    await page.waitForSelector(`.card[data-job-id="${jobA}"]`);
    assert.equal(await page.locator('.card').count(), 1);
    assert.match((await page.textContent('.card .card-params')) ?? '', /64×64 · 12 steps · Euler a · CFG 7 · seed 4242/);
    await shot(page, '05-gallery');

    // PNG info: Kiln's own PNG, dropped, read in the browser, loaded into the form.
    const name = await page.$eval('.card', (e) => (e as HTMLElement).dataset.name!);
    const png = Buffer.from(await (await fetch(`${kilnUrl}/v1/images/${name}`, { headers: { 'x-api-key': 'ui-key' } })).arrayBuffer());
    await page.click('[data-tab=generate]');
    await page.fill('#prompt', 'something else');
    await page.click('[data-tab=pnginfo]');
    await dropFile(page, '#png-drop', png, name);
    await page.waitForSelector('#png-result:not([hidden])');
    const text = (await page.textContent('#png-text')) ?? '';
    assert.match(text, /^a red \(apple:1\.2\), \[blurry\]\nSteps: 12, Sampler: Euler a, .*Seed: 4242, Size: 64x64/);
    await page.click('#png-load');
    assert.equal(await page.inputValue('#prompt'), 'a red (apple:1.2), [blurry]');
    assert.equal(await page.inputValue('input[name=seed]'), '4242');
    assert.equal(await page.inputValue('input[name=steps]'), '12');

    // An A1111-style PNG: UTF-8 prompt (iTXt), a LoRA tag, the old "sampler + schedule" name, quoted values.
    const a1111 = [
      'masterpiece, <lora:tiny-sd1-kohya:0.6> a castle 城',
      'Negative prompt: lowres, "bad"',
      'Steps: 9, Sampler: DPM++ 2M Karras, CFG scale: 6.5, Seed: 1234, Size: 64x64, Model hash: 0123abcd, Model: tiny-sd1, Lora hashes: "tiny-sd1-kohya: 123abc", Version: v1.6.0',
    ].join('\n');
    const foreign = addPngText(
      await sharp({ create: { width: 8, height: 8, channels: 3, background: '#808080' } })
        .png()
        .toBuffer(),
      'parameters',
      a1111,
    );
    await page.click('[data-tab=pnginfo]');
    await dropFile(page, '#png-drop', foreign, 'a1111.png');
    await page.waitForFunction(() => document.querySelector('#png-text')?.textContent?.startsWith('masterpiece'));
    assert.equal(await page.textContent('#png-params dt:has-text("Lora hashes") + dd'), 'tiny-sd1-kohya: 123abc');
    await shot(page, '06-png-info');
    await page.click('#png-load');
    assert.equal(await page.inputValue('#prompt'), 'masterpiece, a castle 城');
    assert.equal(await page.inputValue('textarea[name=negative_prompt]'), 'lowres, "bad"');
    assert.equal(await page.inputValue('#sampler'), 'DPM++ 2M');
    assert.equal(await page.inputValue('#schedule'), 'Karras');
    assert.equal(await page.inputValue('input[name=cfg_scale]'), '6.5');
    assert.equal(await page.inputValue('#lora-list input'), '0.6');

    // Send A to img2img, paint a mask, inpaint (LoRA from the picker applied too).
    await page.click('[data-tab=gallery]');
    await page.click('.card [data-act=img2img]');
    await page.waitForSelector('#init-stage:not([hidden])');
    await page.check('input[name=inpaint]');
    const box = (await page.locator('#mask-canvas').boundingBox())!;
    await page.mouse.move(box.x + box.width * 0.3, box.y + box.height * 0.3);
    await page.mouse.down();
    await page.mouse.move(box.x + box.width * 0.7, box.y + box.height * 0.6, { steps: 5 });
    await page.mouse.up();
    await page.fill('input[name=steps]', '4');
    await shot(page, '07-inpaint');
    await page.click('#generate');
    await page.waitForSelector('.job[data-state=succeeded]:first-child img.result');
    const inpaintId = await page.$eval('.job', (e) => (e as HTMLElement).dataset.jobId!);
    const inpaint = (await app.inject({ url: `/v1/jobs/${inpaintId}`, headers: { 'x-api-key': 'ui-key' } })).json();
    assert.equal(inpaint.request.type, 'img2img');
    assert.match(inpaint.images[0].infotext, /Mask blur: 4/, 'the painted mask went with the job');
    assert.match(inpaint.images[0].infotext, /Lora hashes/, 'the LoRA from the picker went with the job');

    // Upscale a gallery image (built-in Lanczos): a new 128x128 image in the gallery.
    await page.click('[data-tab=gallery]');
    await page.selectOption('#upscaler', 'Lanczos');
    await page.click(`.card[data-job-id="${jobA}"] [data-act=upscale]`);
    await page.waitForSelector('.job[data-state=succeeded]:first-child img.result');
    assert.equal(await page.$eval('.job:first-child img.result', (i) => (i as HTMLImageElement).naturalWidth), 128);
    await shot(page, '08-results');

    // Gallery actions: download, copy infotext, delete (forgets the upscaled image in this browser).
    await page.click('[data-tab=gallery]');
    await page.waitForFunction(() => document.querySelectorAll('.card').length === 3);
    const [download] = await Promise.all([page.waitForEvent('download'), page.click(`.card[data-job-id="${jobA}"] [data-act=download]`)]);
    assert.equal(download.suggestedFilename(), name);
    await page.click(`.card[data-job-id="${jobA}"] [data-act=copy]`);
    await page.waitForSelector('#toast[data-kind=info]:not([hidden])');
    assert.match(await page.evaluate(() => navigator.clipboard.readText()), /^a red \(apple:1\.2\), \[blurry\]\nSteps: 12/);
    await page.click('.card:first-child [data-act=delete]');
    await page.waitForFunction(() => document.querySelectorAll('.card').length === 2);
    assert.equal(await page.textContent('#gallery-count'), '(2)');

    // Phone width: readable, nothing wider than the screen.
    await page.setViewportSize({ width: 390, height: 844 });
    await page.click('[data-tab=generate]');
    assert.ok((await page.evaluate(() => document.documentElement.scrollWidth)) <= 390, 'no horizontal scrolling at 390 px');
    await shot(page, '09-phone');

    assert.deepEqual(errors, [], 'no script errors');
    assert.deepEqual(outside, [], 'every request stays under the proxy prefix (relative URLs, no external requests)');
    console.log(`# playground e2e: ${((performance.now() - t0) / 1000).toFixed(1)} s; screenshots in ${SHOTS}`);
  } finally {
    await context?.close().catch(() => undefined);
    proxy?.closeAllConnections();
    proxy?.close();
    await app.close();
    rmSync(dir, { recursive: true, force: true });
    rmSync(profile, { recursive: true, force: true });
  }
});
