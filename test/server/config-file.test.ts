// The config file: unknown keys fail naming the closest valid key; flag names take the flag's unit (seconds,
// MiB, hours) as flags and env do; dotted names take the unit their suffix names, and a sub-second …Ms value
// (the "jobTimeoutMs: 600 meant 0.6 s" trap) is refused with the fix.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadConfig } from '../../src/server/config.ts';
import { tempDir } from '../queue/helpers.ts';

const BIN = fileURLToPath(new URL('../../bin/kiln.js', import.meta.url));

test('unknown config-file keys fail, naming the key and the closest valid one', () => {
  const load = (file: Record<string, unknown>) => () => loadConfig({ flags: { 'data-dir': '/tmp/kiln-cfg' }, env: {}, file });
  assert.throws(load({ prot: 8080 }), /^ConfigError: prot \(config file\): unknown key; did you mean "port"\?/);
  assert.throws(load({ queue: { jobTimeoutMss: 5000 } }), /queue\.jobTimeoutMss \(config file\): unknown key; did you mean "queue\.jobTimeoutMs"/);
  assert.throws(load({ limits: { maxStep: 3 } }), /did you mean "limits\.maxSteps"/);
  assert.doesNotThrow(load({ port: 8080, modelAliases: {}, queue: { maxQueued: 3 } }));
});

test('one unit convention: flag names are seconds/MiB in flags, env and file alike; dotted names carry their unit', () => {
  const base = { flags: { 'data-dir': '/tmp/kiln-cfg' }, env: {} };
  assert.equal(loadConfig({ ...base, file: { 'job-timeout': 600 } }).queue.jobTimeoutMs, 600_000);
  assert.equal(loadConfig({ ...base, flags: { ...base.flags, 'job-timeout': '600' } }).queue.jobTimeoutMs, 600_000);
  assert.equal(loadConfig({ ...base, env: { KILN_JOB_TIMEOUT: '600' } }).queue.jobTimeoutMs, 600_000);
  assert.equal(loadConfig({ ...base, file: { queue: { jobTimeoutMs: 600_000 } } }).queue.jobTimeoutMs, 600_000);
  assert.equal(loadConfig({ ...base, file: { 'max-body-mb': 5 } }).limits.bodyBytes, 5 * 1024 * 1024);
  assert.throws(
    () => loadConfig({ ...base, file: { queue: { jobTimeoutMs: 600 } } }),
    /600 ms is under a second; did you mean seconds\? Write "job-timeout: 600"/,
  );
  assert.throws(() => loadConfig({ ...base, file: { 'job-timeout': 5, queue: { jobTimeoutMs: 5000 } } }), /given twice/);
});

test('kiln serve --print-config prints the resolved config (file, env and flags merged; keys masked) and exits', () => {
  const t = tempDir('kiln-printcfg-');
  try {
    writeFileSync(join(t.dir, 'kiln.config.yaml'), 'job-timeout: 90\nlimits:\n  maxSteps: 40\n');
    const r = spawnSync(process.execPath, [BIN, 'serve', '--data-dir', t.dir, '--port', '9123', '--api-key', 'secretsecret', '--print-config'], {
      encoding: 'utf8',
      env: { ...process.env, KILN_MAX_WIDTH: '1024' },
      timeout: 60_000,
    });
    assert.equal(r.status, 0, r.stderr);
    const cfg = JSON.parse(r.stdout);
    assert.equal(cfg.port, 9123);
    assert.equal(cfg.queue.jobTimeoutMs, 90_000);
    assert.equal(cfg.limits.maxSteps, 40);
    assert.equal(cfg.limits.maxWidth, 1024);
    assert.ok(!r.stdout.includes('secretsecret'));
    const bad = spawnSync(process.execPath, [BIN, 'serve', '--data-dir', t.dir, '--prot', '1'], { encoding: 'utf8', timeout: 60_000 });
    assert.equal(bad.status, 1);
    assert.match(bad.stderr, /unknown option '--prot'[\s\S]*Did you mean --port\?/);
    const version = spawnSync(process.execPath, [BIN, '--version'], { encoding: 'utf8', timeout: 60_000 });
    assert.match(version.stdout, /^\d+\.\d+\.\d+\n$/);
  } finally {
    t.remove();
  }
});
