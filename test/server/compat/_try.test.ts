import { test } from 'node:test';
import { startCompatServer } from '/work/main/test/server/compat/helpers.ts';
test('x', async () => {
  const s = await startCompatServer();
  let t = Date.now();
  const r = await s.app.inject({ method: 'POST', url: '/v1/generate', payload: { prompt: 'a red apple', width: 64, height: 64, steps: 3 } });
  console.log(r.statusCode, Date.now() - t, r.body.slice(0, 300));
  t = Date.now();
  const r2 = await s.app.inject({ method: 'POST', url: '/v1/generate', payload: { prompt: 'a red apple', width: 64, height: 64, steps: 3 , images_per_prompt: 2} });
  console.log(r2.statusCode, Date.now() - t, r2.json().images[0].infotext);
  await s.close();
});
