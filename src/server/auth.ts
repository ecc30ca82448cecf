// API keys: X-API-Key or Authorization: Bearer <key> (a bare key in Authorization is accepted too, as RunPod
// clients send it). Keys are compared in constant time: both sides are hashed to fixed-length digests first,
// and every configured key is checked, so neither length nor position leaks through timing.
import { createHash, timingSafeEqual } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';
import type { ApiKey, Role } from './config.ts';

export interface Principal {
  /** The key's name (never the key), used as job owner and in logs. */
  name: string;
  role: Role;
  /** True when the server runs without keys (everything allowed). */
  anonymous: boolean;
}

export type AuthLevel = 'public' | 'user' | 'admin';

/** Admins see every job, and so does everyone when the server runs without keys. */
export function seesAllJobs(p: Principal): boolean {
  return p.anonymous || p.role === 'admin';
}

/** Whether a caller may see a job (and its images) owned by `owner`; others get 404, not 403. */
export function maySeeJob(p: Principal, owner: string | undefined): boolean {
  return seesAllJobs(p) || p.name === owner;
}

const digest = (s: string) => createHash('sha256').update(s).digest();

export function presentedKey(headers: IncomingHttpHeaders): string | undefined {
  const x = headers['x-api-key'];
  if (typeof x === 'string' && x.length > 0) return x.trim();
  const auth = headers.authorization;
  if (typeof auth !== 'string' || auth.length === 0) return undefined;
  const m = /^Bearer\s+(.+)$/i.exec(auth);
  if (m) return m[1]!.trim();
  return /^Basic\s/i.test(auth) ? undefined : auth.trim();
}

export class KeyRing {
  private readonly keys: Array<ApiKey & { hash: Buffer }>;

  constructor(keys: ApiKey[]) {
    this.keys = keys.map((k) => ({ ...k, hash: digest(k.key) }));
  }

  get enabled(): boolean {
    return this.keys.length > 0;
  }

  /** The matching key's principal, or undefined. Runs over every key regardless of matches. */
  check(key: string | undefined): Principal | undefined {
    if (!this.enabled) return { name: 'anonymous', role: 'admin', anonymous: true };
    if (!key) return undefined;
    const h = digest(key);
    let found: (ApiKey & { hash: Buffer }) | undefined;
    for (const k of this.keys) if (timingSafeEqual(h, k.hash) && !found) found = k;
    return found ? { name: found.name, role: found.role, anonymous: false } : undefined;
  }
}

/** The rate-limit bucket of a client address: IPv4 as is, IPv6 by its /64 (one host usually holds a whole /64). */
export function clientBucket(ip: string): string {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip);
  if (mapped) return mapped[1]!;
  if (!ip.includes(':')) return ip;
  // Expand "::" so the first four groups are the /64 prefix.
  const [head = '', tail] = ip.split('::');
  const left = head ? head.split(':') : [];
  const right = tail ? tail.split(':') : [];
  const groups = tail === undefined ? left : [...left, ...Array<string>(Math.max(0, 8 - left.length - right.length)).fill('0'), ...right];
  return `${groups
    .slice(0, 4)
    .map((g) => g.toLowerCase().replace(/^0+(?=.)/, ''))
    .join(':')}::/64`;
}

/**
 * Counts requests with a missing or wrong API key per client address in fixed one-minute windows. Only
 * failures count, so a valid key from the same address (a shared NAT, a misconfigured neighbour) is never held
 * back. Memory is bounded: at most `maxClients` addresses are tracked, expired windows are dropped first, then
 * the oldest.
 */
export class AuthFailureLimiter {
  private readonly windows = new Map<string, { count: number; resetAt: number }>();

  constructor(
    readonly perMinute: number,
    private readonly maxClients = 50_000,
    private readonly windowMs = 60_000,
  ) {}

  /** Records one failure from `ip`; returns the seconds to wait when it is over the limit, else undefined. */
  fail(ip: string, now = Date.now()): number | undefined {
    if (this.perMinute <= 0) return undefined;
    const bucket = clientBucket(ip);
    let w = this.windows.get(bucket);
    if (!w || w.resetAt <= now) {
      this.windows.delete(bucket);
      this.makeRoom(now);
      w = { count: 0, resetAt: now + this.windowMs };
      this.windows.set(bucket, w);
    }
    w.count++;
    return w.count > this.perMinute ? Math.max(1, Math.ceil((w.resetAt - now) / 1000)) : undefined;
  }

  get tracked(): number {
    return this.windows.size;
  }

  private makeRoom(now: number): void {
    // Windows are (re)inserted when they open, so Map order is expiry order: expired ones are at the front,
    // and when every window is live the oldest goes.
    for (const [k, w] of this.windows) {
      if (this.windows.size < this.maxClients && w.resetAt > now) break;
      this.windows.delete(k);
    }
  }
}
