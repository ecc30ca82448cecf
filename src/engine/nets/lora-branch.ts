// LoRA branches as graph inputs: a Linear or Conv site of a network built with branches computes
// y = base(x) + up(down(x)), where down and up are graph inputs whose rank is a symbolic dimension, one per site.
// Feeding rank-0 factors gives the base output (adding exact zeros); several LoRAs at once are their factors
// concatenated along the rank axis with each one's scale folded into `up`. Switching LoRAs is then new feeds for
// the same session instead of a new graph. Layouts of the inputs (the feeder reads them back from the session):
//   linear site: lora_down:<path> [r, in], lora_up:<path> [out, r] (torch's layout: Gemm transposes while packing,
//                so switching LoRAs copies the factors without transposing them);
//   conv site:   lora_down:<path> [r, in, kh, kw] (a conv with the base conv's stride and padding),
//                lora_up:<path> [out, r, 1, 1].
import type { GraphBuilder, Value } from '../onnx/graph.ts';

export const LORA_BRANCH_INPUT = {
  down: (path: string) => `lora_down:${path}`,
  up: (path: string) => `lora_up:${path}`,
  rank: (path: string) => `lora_rank:${path}`,
  /** The site path of a branch input name, or undefined for other inputs. */
  parse: (name: string): { path: string; factor: 'down' | 'up' } | undefined => {
    const m = /^lora_(down|up):(.+)$/.exec(name);
    return m ? { path: m[2]!, factor: m[1] as 'down' | 'up' } : undefined;
  },
} as const;

/** Which layer paths of a network get a branch while it is built (the builder side of the LoRA-branch graph). */
export class LoraBranchSites {
  /** The rank-space activation of a site, per input value: net.0.proj's hidden and gate halves share it. */
  private readonly downs = new Map<string, Value>();
  constructor(readonly accepts: (path: string) => boolean) {}

  /** `y` plus the site's branch applied to `x` (rows [..., in]); `cols` takes a slice of the outputs; `scale` multiplies the branch. */
  linear(b: GraphBuilder, path: string, x: Value, y: Value, opts: { in: number; out: number; cols?: [number, number]; scale?: number }): Value {
    if (!this.accepts(path)) return y;
    const rank = LORA_BRANCH_INPUT.rank(path);
    const memo = `${path}|${x.name}`;
    let h = this.downs.get(memo);
    if (!h) {
      // Gemm wants 2-D rows; attention inputs arrive as [batch, seq, in].
      const rows = b.reshape(x, [-1, opts.in]);
      h = b.op('Gemm', [rows, this.factorInput(b, LORA_BRANCH_INPUT.down(path), [rank, opts.in])], { transB: 1 });
      this.downs.set(memo, h);
    }
    const upValue = this.factorInput(b, LORA_BRANCH_INPUT.up(path), [opts.out, rank]);
    let up = opts.cols ? b.slice(upValue, [opts.cols[0]], [opts.cols[1]], [0]) : upValue;
    if (opts.scale !== undefined && opts.scale !== 1) up = b.mul(up, b.constFloat(opts.scale));
    const delta = b.op('Gemm', [h, up], { transB: 1 });
    return b.add(y, b.reshape(delta, b.shapeOf(y)));
  }

  /** `y` plus the site's branch applied to NCHW `x`: a conv like the base one into rank channels, then a 1x1 conv. */
  conv(b: GraphBuilder, path: string, x: Value, y: Value, opts: { in: number; out: number; kernel: number[]; stride: number; pads: number[] }): Value {
    if (!this.accepts(path)) return y;
    const rank = LORA_BRANCH_INPUT.rank(path);
    const down = this.factorInput(b, LORA_BRANCH_INPUT.down(path), [rank, opts.in, ...opts.kernel]);
    const h = b.op('Conv', [x, down], { kernel_shape: opts.kernel, pads: opts.pads, strides: opts.kernel.map(() => opts.stride) });
    const up = this.factorInput(b, LORA_BRANCH_INPUT.up(path), [opts.out, rank, ...opts.kernel.map(() => 1)]);
    return b.add(y, b.op('Conv', [h, up], { kernel_shape: opts.kernel.map(() => 1), strides: opts.kernel.map(() => 1) }));
  }

  private readonly inputs = new Map<string, Value>();
  /** A factor input, declared once however often its site is applied. */
  private factorInput(b: GraphBuilder, name: string, shape: (number | string)[]): Value {
    let v = this.inputs.get(name);
    if (!v) {
      v = b.input(name, shape);
      this.inputs.set(name, v);
    }
    return v;
  }
}

/** Branch-site version: bump when the set of sites or the input layout changes (it is part of the graph key). */
export const LORA_BRANCH_SITES_VERSION = 1;
