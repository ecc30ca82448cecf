// Webhook targets: which addresses are refused by default, how the allowlist opens them, and that delivery
// checks the DNS answer it connects to (rebinding). No traffic leaves loopback: names are resolved by a fake
// lookup, and the only receiver listens on 127.0.0.1.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { refusedAddressReason, WebhookPolicy, WebhookTargetError } from '../../src/queue/webhook-target.ts';
import type { ResolveAll } from '../../src/queue/webhook-target.ts';
import { WebhookSender } from '../../src/queue/webhooks.ts';
import type { Job } from '../../src/queue/job.ts';
import { spec } from './helpers.ts';

test('refused by default: loopback, private, link-local/metadata, CGNAT, multicast, unspecified (IPv4, IPv6 and mapped forms)', () => {
  const refused: Array<[string, RegExp]> = [
    ['127.0.0.1', /loopback/],
    ['127.255.0.9', /loopback/],
    ['10.1.2.3', /private/],
    ['172.16.0.1', /private/],
    ['172.31.255.255', /private/],
    ['192.168.1.1', /private/],
    ['100.64.0.1', /carrier-grade NAT/],
    ['100.100.100.200', /carrier-grade NAT/],
    ['169.254.169.254', /link-local/],
    ['192.0.0.192', /IETF/],
    ['0.0.0.0', /unspecified/],
    ['224.0.0.251', /multicast/],
    ['255.255.255.255', /broadcast/],
    ['::1', /loopback/],
    ['::', /unspecified/],
    ['fe80::1', /link-local/],
    ['fd00:ec2::254', /unique local/],
    ['fc00::5', /unique local/],
    ['ff02::1', /multicast/],
    ['::ffff:127.0.0.1', /loopback/],
    ['::ffff:7f00:1', /loopback/],
    ['::ffff:a9fe:a9fe', /link-local/],
    ['64:ff9b::10.0.0.1', /private/],
  ];
  for (const [ip, why] of refused) assert.match(refusedAddressReason(ip) ?? 'allowed', why, ip);
  for (const ip of ['8.8.8.8', '1.1.1.1', '93.184.216.34', '172.32.0.1', '100.128.0.1', '2606:4700:4700::1111', '::ffff:8.8.8.8']) {
    assert.equal(refusedAddressReason(ip), undefined, ip);
  }
});

test('literal hosts: IPs in any spelling the URL parser accepts, and localhost names, are refused unless allowlisted', () => {
  const policy = new WebhookPolicy();
  for (const url of [
    'http://127.0.0.1:8080/hook',
    'http://2130706433/',
    'http://0x7f.1/',
    'http://[::1]/',
    'http://[::ffff:127.0.0.1]/',
    'http://169.254.169.254/latest/meta-data',
    'http://localhost/',
    'http://api.localhost/',
  ]) {
    assert.throws(() => policy.checkLiteral(new URL(url)), WebhookTargetError, url);
  }
  assert.equal(policy.checkLiteral(new URL('https://hooks.example.com/x')), 'hooks.example.com', 'names are checked at resolution');
  assert.equal(policy.checkLiteral(new URL('http://8.8.8.8/')), '8.8.8.8');

  const open = new WebhookPolicy(['127.0.0.1', '10.0.0.0/8', 'fd00::/8', 'LocalHost']);
  assert.equal(open.checkLiteral(new URL('http://127.0.0.1:9/')), '127.0.0.1');
  assert.equal(open.checkLiteral(new URL('http://10.9.8.7/')), '10.9.8.7');
  assert.equal(open.checkLiteral(new URL('http://[fd00:ec2::254]/')), 'fd00:ec2::254');
  assert.equal(open.checkLiteral(new URL('http://localhost/')), 'localhost');
  assert.throws(() => open.checkLiteral(new URL('http://127.0.0.2/')), /loopback address.*webhookAllow/);
  assert.throws(() => open.checkLiteral(new URL('http://192.168.0.1/')), /private/);
});

test('allowlist entries are checked when the policy is made', () => {
  for (const bad of ['10.0.0.0/33', '::1/129', '10.0.0.0/8/1', 'http://x', 'a b', '10.0.0.0/x', '-bad-.com']) {
    assert.throws(() => new WebhookPolicy([bad]), /webhook allowlist entry/, bad);
  }
  assert.doesNotThrow(() => new WebhookPolicy(['hooks.internal', 'a-b.example.', '192.168.0.0/16', '[fd00::]/8', '::1']));
});

test('DNS answers: every address is checked; one refused address refuses the name; an allowlisted name skips the check', async () => {
  const dns: Record<string, string[]> = {
    'public.example.test': ['93.184.216.34'],
    'mixed.example.test': ['93.184.216.34', '10.0.0.5'],
    'metadata.example.test': ['169.254.169.254'],
    'v6.example.test': ['fd00::1'],
  };
  const lookup: ResolveAll = async (host) => (dns[host] ?? []).map((address) => ({ address, family: address.includes(':') ? 6 : 4 }));
  const policy = new WebhookPolicy([], lookup);
  assert.deepEqual(await policy.resolve('public.example.test'), [{ address: '93.184.216.34', family: 4 }]);
  await assert.rejects(policy.resolve('mixed.example.test'), /10\.0\.0\.5 \(mixed\.example\.test resolves to it\) is a private/);
  await assert.rejects(policy.resolve('metadata.example.test'), /link-local/);
  await assert.rejects(policy.resolve('v6.example.test'), /unique local/);
  await assert.rejects(policy.resolve('nothing.example.test'), (e: Error) => !(e instanceof WebhookTargetError) && /has no address/.test(e.message));
  const byName = new WebhookPolicy(['metadata.example.test'], lookup);
  assert.equal((await byName.resolve('metadata.example.test'))[0]?.address, '169.254.169.254');
  const slow = new WebhookPolicy([], () => new Promise(() => {}));
  await assert.rejects(slow.resolve('slow.example.test', 50), (e: Error) => !(e instanceof WebhookTargetError) && /longer than 0.05 s/.test(e.message));
  // At submission a name that does not resolve (now) is let through; delivery checks it again.
  await new WebhookSender({ policy: new WebhookPolicy([], lookup) }).checkTarget('https://nothing.example.test/hook');
});

/** A receiver on loopback that records the bodies it gets. */
async function receiver() {
  const bodies: unknown[] = [];
  const server = createServer((req, res) => {
    let raw = '';
    req.on('data', (c) => {
      raw += c;
    });
    req.on('end', () => {
      bodies.push(JSON.parse(raw));
      res.end('ok');
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const port = (server.address() as AddressInfo).port;
  return { port, bodies, close: () => new Promise<void>((r) => server.close(() => r())) };
}

function finished(url: string): Job {
  return { id: 'job-1', state: 'succeeded', spec: { ...spec(), webhook: { url } } } as unknown as Job;
}

test('delivery: a refused target gets nothing and is not retried; an allowlisted loopback receiver gets the job; the name is pinned to the checked address', async () => {
  const hook = await receiver();
  const warnings: Array<{ o: object; msg: string }> = [];
  const log = { warn: (o: object, msg: string) => warnings.push({ o, msg }) };
  let answer = '93.184.216.34';
  // A rebinding DNS server: public when the URL is checked at submission, loopback when the POST goes out.
  const rebinding: ResolveAll = async () => [{ address: answer, family: 4 }];
  try {
    const refusing = new WebhookSender({ log, attempts: 3, retryDelayMs: 5_000, policy: new WebhookPolicy([], rebinding) });
    const t0 = Date.now();
    refusing.deliver(finished(`http://127.0.0.1:${hook.port}/hook`));
    await refusing.drain();
    assert.ok(Date.now() - t0 < 4_000, 'a refused target is not retried (the retry delay is 5 s)');
    assert.equal(hook.bodies.length, 0);
    assert.equal(warnings.at(-1)?.msg, 'webhook refused');
    assert.match(JSON.stringify(warnings.at(-1)?.o), /127\.0\.0\.1 is a loopback address/);

    await refusing.checkTarget(`http://hooks.example.test:${hook.port}/hook`);
    answer = '127.0.0.1';
    refusing.deliver(finished(`http://hooks.example.test:${hook.port}/hook`));
    await refusing.drain();
    assert.equal(hook.bodies.length, 0, 'the delivery-time answer is checked again');
    assert.match(JSON.stringify(warnings.at(-1)?.o), /hooks\.example\.test resolves to it\) is a loopback/);

    // Allowed by CIDR: the .test name only resolves through the fake lookup, so the POST arriving proves the
    // connection went to the address that lookup returned and the policy checked.
    const allowing = new WebhookSender({ log, attempts: 1, policy: new WebhookPolicy(['127.0.0.0/8'], rebinding) });
    allowing.deliver(finished(`http://hooks.example.test:${hook.port}/hook`));
    allowing.deliver(finished(`http://127.0.0.1:${hook.port}/hook`));
    await allowing.drain();
    assert.equal(hook.bodies.length, 2);
    assert.deepEqual(hook.bodies[0], { id: 'job-1', state: 'succeeded', error: null });
  } finally {
    await hook.close();
  }
});
