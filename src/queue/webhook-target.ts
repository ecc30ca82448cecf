// Which addresses a webhook may be sent to. By default only public unicast addresses: loopback, link-local
// (cloud metadata at 169.254.169.254 included), private (RFC 1918, ULA), CGNAT, multicast, unspecified and other
// special-purpose ranges are refused, so a user cannot make the server POST into its own network. An operator's
// allowlist (host names or CIDRs) opens chosen targets. The check runs on the literal host at submission and on
// every resolved address at delivery, and delivery connects to exactly the address that was checked (no second
// DNS answer can slip in between: DNS rebinding).
import { BlockList, isIP } from 'node:net';
import { lookup } from 'node:dns/promises';

interface Range {
  net: string;
  prefix: number;
  why: string;
}

const REFUSED_V4: readonly Range[] = [
  { net: '0.0.0.0', prefix: 8, why: 'unspecified ("this network")' },
  { net: '10.0.0.0', prefix: 8, why: 'private (RFC 1918)' },
  { net: '100.64.0.0', prefix: 10, why: 'carrier-grade NAT (RFC 6598)' },
  { net: '127.0.0.0', prefix: 8, why: 'loopback' },
  { net: '169.254.0.0', prefix: 16, why: 'link-local (cloud metadata lives here)' },
  { net: '172.16.0.0', prefix: 12, why: 'private (RFC 1918)' },
  { net: '192.0.0.0', prefix: 24, why: 'IETF protocol assignments (some cloud metadata)' },
  { net: '192.0.2.0', prefix: 24, why: 'documentation' },
  { net: '192.168.0.0', prefix: 16, why: 'private (RFC 1918)' },
  { net: '198.18.0.0', prefix: 15, why: 'benchmarking' },
  { net: '198.51.100.0', prefix: 24, why: 'documentation' },
  { net: '203.0.113.0', prefix: 24, why: 'documentation' },
  { net: '224.0.0.0', prefix: 4, why: 'multicast' },
  { net: '240.0.0.0', prefix: 4, why: 'reserved / broadcast' },
];

const REFUSED_V6: readonly Range[] = [
  { net: '::', prefix: 128, why: 'unspecified' },
  { net: '::1', prefix: 128, why: 'loopback' },
  { net: '100::', prefix: 64, why: 'discard-only' },
  { net: '2001:db8::', prefix: 32, why: 'documentation' },
  { net: 'fc00::', prefix: 7, why: 'unique local (ULA; cloud metadata such as fd00:ec2::254)' },
  { net: 'fe80::', prefix: 10, why: 'link-local' },
  { net: 'fec0::', prefix: 10, why: 'site-local (deprecated)' },
  { net: 'ff00::', prefix: 8, why: 'multicast' },
];

/** IPv6 forms that carry an IPv4 address (mapped ::ffff:a.b.c.d, NAT64 64:ff9b::a.b.c.d): checked as that IPv4. */
function embeddedV4(ip: string): string | undefined {
  const m = /^(?:::ffff:|64:ff9b::)(?:0:)?(\d+\.\d+\.\d+\.\d+)$/i.exec(ip);
  if (m) return m[1];
  const hex = /^(?:::ffff:|64:ff9b::)([0-9a-f]{1,4}):([0-9a-f]{1,4})$/i.exec(ip);
  if (!hex) return undefined;
  const hi = Number.parseInt(hex[1]!, 16);
  const lo = Number.parseInt(hex[2]!, 16);
  return `${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}`;
}

/** Why an IP address is refused as a webhook target, or undefined for a public unicast address. */
export function refusedAddressReason(ip: string): string | undefined {
  const v4 = isIP(ip) === 4 ? ip : embeddedV4(ip);
  if (v4) return REFUSED_V4.find((r) => inRange(v4, r, 'ipv4'))?.why;
  if (isIP(ip) !== 6) return 'not an IP address';
  return REFUSED_V6.find((r) => inRange(ip, r, 'ipv6'))?.why;
}

function inRange(ip: string, r: Range, type: 'ipv4' | 'ipv6'): boolean {
  const list = new BlockList();
  list.addSubnet(r.net, r.prefix, type);
  return list.check(ip, type);
}

/** A DNS name: dot-separated labels of letters, digits and inner hyphens (a trailing dot allowed). */
function isHostName(name: string): boolean {
  const labels = name.replace(/\.$/, '').split('.');
  return name.length <= 253 && labels.every((l) => /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/.test(l));
}

/** Host names that mean this machine whatever DNS says (RFC 6761). */
const LOCAL_NAMES = /^(localhost|localhost\.localdomain)$|\.localhost$/i;

export class WebhookTargetError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'WebhookTargetError';
  }
}

/**
 * The operator's allowlist: host names (exact, case-insensitive) and IP addresses or CIDR blocks. Entries are
 * checked when the policy is made, so a typo fails at startup rather than silently opening nothing.
 */
/** DNS lookup of every address of a name (node:dns's lookup by default; tests give their own). */
export type ResolveAll = (host: string) => Promise<Array<{ address: string; family: number }>>;

const systemLookup: ResolveAll = (host) => lookup(host, { all: true, verbatim: true });

export class WebhookPolicy {
  private readonly hosts = new Set<string>();
  private readonly blocks = new BlockList();

  constructor(
    readonly allow: readonly string[] = [],
    private readonly lookupAll: ResolveAll = systemLookup,
  ) {
    for (const raw of allow) {
      const entry = raw.trim().toLowerCase();
      const [addr, prefix, extra] = entry.replace(/^\[|\](?=\/|$)/g, '').split('/');
      const ipVersion = isIP(addr ?? '');
      if (ipVersion) {
        const maxBits = ipVersion === 4 ? 32 : 128;
        const bits = prefix === undefined ? maxBits : Number(prefix);
        if (extra !== undefined || (prefix !== undefined && !/^\d{1,3}$/.test(prefix)) || bits > maxBits) {
          throw new WebhookTargetError(`webhook allowlist entry "${raw}": not a valid CIDR`);
        }
        this.blocks.addSubnet(addr!, bits, ipVersion === 4 ? 'ipv4' : 'ipv6');
      } else if (isHostName(entry)) {
        this.hosts.add(entry.replace(/\.$/, ''));
      } else {
        throw new WebhookTargetError(`webhook allowlist entry "${raw}": give a host name, an IP address or a CIDR block (10.0.0.0/8, fd00::/8)`);
      }
    }
  }

  hostAllowed(host: string): boolean {
    return this.hosts.has(host.toLowerCase().replace(/\.$/, ''));
  }

  addressAllowed(ip: string): boolean {
    const v4 = isIP(ip) === 4 ? ip : embeddedV4(ip);
    if (v4) return this.blocks.check(v4, 'ipv4');
    return isIP(ip) === 6 && this.blocks.check(ip, 'ipv6');
  }

  /** Throws WebhookTargetError when `ip` (reached through `host`) may not receive webhooks. */
  checkAddress(ip: string, host: string): void {
    if (this.addressAllowed(ip)) return;
    const why = refusedAddressReason(ip);
    if (why) {
      const via = host === ip ? '' : ` (${host} resolves to it)`;
      throw new WebhookTargetError(
        `the target ${ip}${via} is a ${why} address; webhooks go to public addresses only unless the server's webhookAllow lists the host or a CIDR`,
      );
    }
  }

  /**
   * The checks that need no DNS: an IP literal or a local name (localhost) is refused unless allowed. Returns
   * the URL's host (brackets removed) for the caller. Throws WebhookTargetError.
   */
  checkLiteral(url: URL): string {
    const host = url.hostname.replace(/^\[|\]$/g, '');
    if (this.hostAllowed(host)) return host;
    if (isIP(host)) this.checkAddress(host, host);
    else if (LOCAL_NAMES.test(host)) {
      throw new WebhookTargetError(`the target ${host} is this machine; webhooks go to public addresses only unless the server's webhookAllow lists it`);
    }
    return host;
  }

  /**
   * Every address `host` resolves to, each checked (one refused address refuses the host: an attacker's DNS
   * could hand out either). An allowlisted host name skips the address checks. Throws WebhookTargetError for a
   * refused address, a plain Error when the lookup fails or times out (a delivery failure, retried).
   */
  async resolve(host: string, timeoutMs = 5_000): Promise<Array<{ address: string; family: number }>> {
    if (isIP(host)) {
      if (!this.hostAllowed(host)) this.checkAddress(host, host);
      return [{ address: host, family: isIP(host) }];
    }
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      // A slow or failed lookup is a delivery failure (retried), not a refusal.
      timer = setTimeout(() => reject(new Error(`resolving ${host} took longer than ${timeoutMs / 1000} s`)), timeoutMs);
    });
    try {
      const addresses = await Promise.race([this.lookupAll(host), timeout]);
      if (addresses.length === 0) throw new Error(`${host} has no address`);
      if (!this.hostAllowed(host)) for (const a of addresses) this.checkAddress(a.address, host);
      return addresses;
    } finally {
      clearTimeout(timer);
    }
  }
}
