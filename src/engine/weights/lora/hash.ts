// A1111's LoRA short hash for infotext "Lora hashes": for .safetensors the "addnet" hash (sha256 of the bytes
// after the JSON header, so editing metadata keeps the hash), else the whole file's sha256; 12 hex digits.
import { createHash } from 'node:crypto';
import { createReadStream, openSync, readSync, closeSync } from 'node:fs';
import { filesIdentity } from '../hash.ts';

const memory = new Map<string, Promise<string>>();

function dataOffset(path: string): number {
  if (!path.toLowerCase().endsWith('.safetensors')) return 0;
  const fd = openSync(path, 'r');
  try {
    const head = Buffer.alloc(8);
    readSync(fd, head, 0, 8, 0);
    return 8 + Number(head.readBigUInt64LE(0));
  } finally {
    closeSync(fd);
  }
}

export function loraShortHash(path: string): Promise<string> {
  const key = filesIdentity([path]);
  let p = memory.get(key);
  if (!p) {
    p = new Promise<string>((resolve, reject) => {
      const h = createHash('sha256');
      createReadStream(path, { start: dataOffset(path), highWaterMark: 4 << 20 })
        .on('data', (chunk) => h.update(chunk))
        .on('error', reject)
        .on('end', () => resolve(h.digest('hex').slice(0, 12)));
    });
    p.catch(() => memory.delete(key));
    memory.set(key, p);
  }
  return p;
}

/** The infotext value: `name: hash, ...`, with ':' and ',' removed from names as A1111 does. */
export async function loraHashesText(loras: Array<{ name: string; path: string }>): Promise<string | undefined> {
  if (loras.length === 0) return undefined;
  const parts = await Promise.all(loras.map(async (l) => `${l.name.replace(/[:,]/g, '')}: ${await loraShortHash(l.path)}`));
  return parts.join(', ');
}
