// --cors-origins: a listed origin gets the CORS headers and its preflight is answered without a key; an
// unlisted origin gets none; the real request still needs its API key.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startTestServer } from './helpers.ts';

test('CORS: preflight answered for a listed origin, before authentication; others get no CORS headers', async () => {
  const s = await startTestServer({ corsOrigins: ['http://localhost:3000'], keys: [{ name: 'u', key: 'user-key-123', role: 'user' }] });
  try {
    const pre = await s.app.inject({
      method: 'OPTIONS',
      url: '/v1/generate',
      headers: { origin: 'http://localhost:3000', 'access-control-request-method': 'POST', 'access-control-request-headers': 'content-type, x-api-key' },
    });
    assert.equal(pre.statusCode, 204);
    assert.equal(pre.headers['access-control-allow-origin'], 'http://localhost:3000');
    assert.equal(pre.headers['access-control-allow-headers'], 'content-type, x-api-key');
    assert.match(String(pre.headers['access-control-allow-methods']), /POST/);
    const noKey = await s.app.inject({ url: '/v1/models', headers: { origin: 'http://localhost:3000' } });
    assert.equal(noKey.statusCode, 401);
    assert.equal(noKey.headers['access-control-allow-origin'], 'http://localhost:3000', 'errors carry CORS headers too, so the page can read them');
    const ok = await s.app.inject({ url: '/v1/models', headers: { origin: 'http://localhost:3000', 'x-api-key': 'user-key-123' } });
    assert.equal(ok.statusCode, 200);
    const other = await s.app.inject({ url: '/v1/models', headers: { origin: 'http://evil.example', 'x-api-key': 'user-key-123' } });
    assert.equal(other.headers['access-control-allow-origin'], undefined);
    const otherPre = await s.app.inject({
      method: 'OPTIONS',
      url: '/v1/generate',
      headers: { origin: 'http://evil.example', 'access-control-request-method': 'POST' },
    });
    assert.notEqual(otherPre.statusCode, 204);
  } finally {
    await s.close();
  }
});
