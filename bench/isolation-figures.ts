// Issue 10 item 5 figures: wrong-key requests answered 429 in a minute, and memory kept by POST /sdapi/v1/options
// with large unknown values. Runs the real server (app.inject, fake engine). Prints numbers; asserts nothing.
// node --expose-gc --import tsx bench/isolation-figures.ts
import { startTestServer } from '../test/server/helpers.ts';

const keys = [{ name: 'alice', key: 'alice-key-0123456789', role: 'user' as const }];
const s = await startTestServer({ keys });
try {
  const codes = new Map<number, number>();
  const t0 = Date.now();
  for (let i = 0; i < 2100; i++) {
    const r = await s.app.inject({ url: '/v1/jobs', headers: { 'x-api-key': `wrong-key-${i}-0123456789` } });
    codes.set(r.statusCode, (codes.get(r.statusCode) ?? 0) + 1);
  }
  const valid = await s.app.inject({ url: '/v1/jobs', headers: { 'x-api-key': keys[0]!.key } });
  console.log(
    `2100 wrong-key requests from one address in ${Date.now() - t0} ms: ${JSON.stringify(Object.fromEntries(codes))}; a valid key from it then: ${valid.statusCode}`,
  );

  const gc = (globalThis as { gc?: () => void }).gc;
  gc?.();
  const before = process.memoryUsage();
  const value = 'x'.repeat(5_850_000);
  for (let i = 0; i < 20; i++) {
    await s.app.inject({
      method: 'POST',
      url: '/sdapi/v1/options',
      payload: { [`junk_${i}`]: value, samples_format: 'png' },
      headers: { 'x-api-key': keys[0]!.key },
    });
  }
  for (let i = 0; i < 3; i++) {
    gc?.();
    await new Promise((r) => setTimeout(r, 50));
  }
  const after = process.memoryUsage();
  const get = await s.app.inject({ url: '/sdapi/v1/options', headers: { 'x-api-key': keys[0]!.key } });
  const mb = (n: number) => (n / 1024 / 1024).toFixed(1);
  console.log(
    `20 x 5.85 MB POST /sdapi/v1/options: heap ${mb(after.heapUsed - before.heapUsed)} MB, rss ${mb(after.rss - before.rss)} MB retained${gc ? '' : ' (run with --expose-gc for a settled figure)'}; GET /sdapi/v1/options is ${get.body.length} bytes`,
  );
} finally {
  await s.close();
}
