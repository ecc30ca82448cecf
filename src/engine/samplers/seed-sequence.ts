// numpy.random.SeedSequence (numpy 1.17+), the seed derivation torchsde's Brownian tree uses: entropy and a spawn
// key are hashed into a pool of 32-bit words, and generate_state turns the pool into seeds. All arithmetic is mod 2^32.

const INIT_A = 0x43b0d7e5;
const MULT_A = 0x931e8875;
const INIT_B = 0x8b51f9dd;
const MULT_B = 0x58f38ded;
const MIX_MULT_L = 0xca01f9dd;
const MIX_MULT_R = 0x4973f715;

const mul32 = (a: number, b: number) => Math.imul(a, b) >>> 0;

/** A non-negative integer as little-endian 32-bit words (0 -> [0]), as numpy's _coerce_to_uint32_array. */
export function uint32Words(value: number | bigint): number[] {
  let v = BigInt(value);
  if (v < 0n) throw new Error(`SeedSequence: entropy and spawn keys must be non-negative, got ${v}`);
  const words: number[] = [];
  do {
    words.push(Number(v & 0xffffffffn));
    v >>= 32n;
  } while (v > 0n);
  return words;
}

function mix(x: number, y: number): number {
  let r = (mul32(MIX_MULT_L, x) - mul32(MIX_MULT_R, y)) >>> 0;
  r = (r ^ (r >>> 16)) >>> 0;
  return r;
}

/** The entropy pool of SeedSequence(entropy, spawn_key, pool_size). */
export function seedSequencePool(entropy: number | bigint, spawnKey: readonly (number | bigint)[] = [], poolSize = 4): Uint32Array {
  let run = uint32Words(entropy);
  const spawn = spawnKey.flatMap((k) => uint32Words(k));
  if (spawn.length > 0 && run.length < poolSize) run = [...run, ...new Array<number>(poolSize - run.length).fill(0)];
  const words = [...run, ...spawn];
  let hashConst = INIT_A;
  const hashmix = (value: number): number => {
    let v = (value ^ hashConst) >>> 0;
    hashConst = mul32(hashConst, MULT_A);
    v = mul32(v, hashConst);
    return (v ^ (v >>> 16)) >>> 0;
  };
  const pool = new Uint32Array(poolSize);
  for (let i = 0; i < poolSize; i++) pool[i] = hashmix(words[i] ?? 0);
  for (let src = 0; src < poolSize; src++) {
    for (let dst = 0; dst < poolSize; dst++) {
      if (src !== dst) pool[dst] = mix(pool[dst]!, hashmix(pool[src]!));
    }
  }
  for (let src = poolSize; src < words.length; src++) {
    for (let dst = 0; dst < poolSize; dst++) pool[dst] = mix(pool[dst]!, hashmix(words[src]!));
  }
  return pool;
}

/** SeedSequence.generate_state(n) as uint32 words. */
export function generateState(pool: Uint32Array, n: number): number[] {
  let hashConst = INIT_B;
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    let v = (pool[i % pool.length]! ^ hashConst) >>> 0;
    hashConst = mul32(hashConst, MULT_B);
    v = mul32(v, hashConst);
    out.push((v ^ (v >>> 16)) >>> 0);
  }
  return out;
}
