// The helper scripts in examples/ (what the seed 002 and 004 READMEs call) run against a spawned `kiln serve` on
// the tiny SD1 model: save_image.sh under dash (POSIX sh), test_api.py with python3, generate_ssl_certs.sh with
// openssl, and init_https.sh starting Kiln over HTTPS with that certificate (checked with curl --cacert).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import sharp from 'sharp';
import { readInfotext } from '../src/storage/encode.ts';
import { tempDir } from './queue/helpers.ts';
import { spawnServer, type ServerProcess } from './server/process.ts';

const run = promisify(execFile);
const EXAMPLES = fileURLToPath(new URL('../examples/', import.meta.url));
const BIN = fileURLToPath(new URL('../bin/kiln.js', import.meta.url));
const TINY = fileURLToPath(new URL('./fixtures/tiny-sd1', import.meta.url));
const SH = existsSync('/usr/bin/dash') ? '/usr/bin/dash' : 'sh';

let t: { dir: string; remove: () => void };
let server: ServerProcess;
before(async () => {
  t = tempDir('kiln-examples-');
  server = await spawnServer(['--data-dir', join(t.dir, 'data'), '--model', TINY]);
});
after(async () => {
  server.child.kill('SIGTERM');
  await server.exited;
  t.remove();
});

test('save_image.sh "a cute robot" file steps size: saves the PNG (with its parameters) under POSIX sh, no jq', async () => {
  const out = join(t.dir, 'robot.png');
  const { stderr } = await run(SH, [join(EXAMPLES, 'save_image.sh'), 'a cute "robot"\\ with\ttabs', out, '3', '64'], {
    env: { ...process.env, KILN_URL: server.url },
    timeout: 120_000,
  });
  assert.match(stderr, /Saved .*robot\.png .*seed \d+/);
  const meta = await sharp(out).metadata();
  assert.deepEqual([meta.format, meta.width, meta.height], ['png', 64, 64]);
  assert.match((await readInfotext(readFileSync(out)))!, /^a cute "robot"\\ with\ttabs\nSteps: 3, .*Size: 64x64/);

  // Errors say what went wrong and exit non-zero: bad arguments, a refused request, no server.
  await assert.rejects(run(SH, [join(EXAMPLES, 'save_image.sh')]), (e: { code: number; stderr: string }) => e.code === 2 && /usage/.test(e.stderr));
  await assert.rejects(
    run(SH, [join(EXAMPLES, 'save_image.sh'), 'x', join(t.dir, 'big.png'), '3', '1024'], { env: { ...process.env, KILN_URL: server.url } }),
    (e: { code: number; stderr: string }) => e.code === 1 && /HTTP 422/.test(e.stderr) && !existsSync(join(t.dir, 'big.png')),
  );
  await assert.rejects(
    run(SH, [join(EXAMPLES, 'save_image.sh'), 'x', join(t.dir, 'no.png'), '3', '64'], { env: { ...process.env, KILN_URL: 'http://127.0.0.1:9' } }),
    (e: { stderr: string }) => /cannot reach/.test(e.stderr),
  );
});

test('test_api.py (standard library): health, then a generation saved as a PNG', async () => {
  const out = join(t.dir, 'generated_image.png');
  const { stdout } = await run('python3', [join(EXAMPLES, 'test_api.py'), '--url', server.url, '--steps', '3', '--size', '64', '--seed', '5', '--out', out], {
    timeout: 120_000,
  });
  assert.match(stdout, /OK: \{.*status/);
  assert.match(stdout, /OK: saved .*generated_image\.png \(64x64, seed 5\)/);
  assert.equal((await sharp(out).metadata()).format, 'png');
  await assert.rejects(
    run('python3', [join(EXAMPLES, 'test_api.py'), '--url', 'http://127.0.0.1:9']),
    (e: { code: number; stdout: string }) => e.code === 1 && /FAIL: cannot reach/.test(e.stdout),
  );
});

test('generate_ssl_certs.sh + init_https.sh: kiln serve over HTTPS with the self-signed certificate', async () => {
  const { stdout } = await run(SH, [join(EXAMPLES, 'generate_ssl_certs.sh'), 'ssl'], { cwd: t.dir });
  assert.match(stdout, /kiln serve --tls-cert ssl\/cert\.pem --tls-key ssl\/key\.pem/);
  assert.equal(statSync(join(t.dir, 'ssl', 'key.pem')).mode & 0o077, 0, 'the key is private');
  const x509 = await run('openssl', ['x509', '-in', join(t.dir, 'ssl', 'cert.pem'), '-noout', '-text']);
  assert.match(x509.stdout, /DNS:localhost, IP Address:127\.0\.0\.1/);
  await assert.rejects(run(SH, [join(EXAMPLES, 'generate_ssl_certs.sh'), 'ssl'], { cwd: t.dir }), /exists already/);

  const child = spawn(SH, [join(EXAMPLES, 'init_https.sh'), '--port', '0', '--log-level', 'warn', '--data-dir', join(t.dir, 'https-data'), '--model', TINY], {
    cwd: t.dir,
    env: { ...process.env, KILN: `${process.execPath} ${BIN}`, KILN_HTTPS_MODE: 'self-signed' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (out += d));
  const exited = new Promise((r) => child.once('exit', r));
  try {
    const url = await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no listening line:\n${out}`)), 30_000);
      const check = () => {
        const m = /listening on (https\S+?) /.exec(out);
        if (m) {
          clearTimeout(timer);
          resolve(m[1]!);
        }
      };
      child.stdout.on('data', check);
      child.stderr.on('data', check);
      void exited.then(() => reject(new Error(`exited:\n${out}`)));
    });
    assert.match(out, /HTTPS with the self-signed certificate in ssl\//);
    const health = await run('curl', ['-sS', '--cacert', join(t.dir, 'ssl', 'cert.pem'), `${url}/health`]);
    assert.equal(JSON.parse(health.stdout).status, 'healthy');
    // Without the certificate, curl refuses the self-signed server: it really is TLS with that certificate.
    await assert.rejects(run('curl', ['-sS', `${url}/health`]));
  } finally {
    child.kill('SIGTERM');
    await exited;
  }

  const custom = run(SH, [join(EXAMPLES, 'init_https.sh')], { env: { ...process.env, KILN_HTTPS_MODE: 'custom', KILN_TLS_CERT: join(t.dir, 'missing.pem') } });
  await assert.rejects(custom, /certificate or key file not found/);
});
