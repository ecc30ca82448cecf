// Walks a bench's command line flag by flag: `value()` takes the current flag's value, `int(lo, hi)` an integer in
// range, each failing with a message that names the flag. The benches' own flags stay in their files.
export interface FlagReader {
  /** The flags in order; `value()` and `int()` consume the one after the flag being handled. */
  [Symbol.iterator](): Iterator<string>;
  value(): string;
  int(lo: number, hi: number): number;
}

export function flagReader(argv: readonly string[]): FlagReader {
  let i = -1;
  const value = () => {
    const flag = argv[i];
    const v = argv[++i];
    if (v === undefined) throw new Error(`${flag} needs a value`);
    return v;
  };
  return {
    *[Symbol.iterator]() {
      for (i++; i < argv.length; i++) yield argv[i]!;
    },
    value,
    int(lo, hi) {
      const flag = argv[i];
      const v = value();
      const n = Number(v);
      if (!Number.isInteger(n) || n < lo || n > hi) throw new Error(`${flag} must be an integer from ${lo} to ${hi}, got ${v}`);
      return n;
    },
  };
}
