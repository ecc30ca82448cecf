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

  /** A short, non-reversible id for rate limiting buckets. */
  static bucketOf(key: string): string {
    return digest(key).toString('hex').slice(0, 16);
  }
}
