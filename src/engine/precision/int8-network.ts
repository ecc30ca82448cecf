// An int8 network (the UNet, the VAE decoder) of one model, made from its first generations: while calibrating, the
// network runs in fp32 with every quantisable convolution's output range as extra outputs (recorded, then dropped
// from the results), and a few of those calls' inputs and outputs are kept. Once `calibrationEvaluations` calls are
// recorded, the next generation builds the int8 graph, runs the kept inputs through it and compares with the fp32
// outputs. Within the bound it is used from then on; otherwise the model keeps the fp32 network and a log line says
// why (fail closed). The ranges and the verdict are stored beside the graph cache, so both survive restarts.
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import type * as Ort from 'onnxruntime-node';
import type { GraphBuilder } from '../onnx/graph.ts';
import type { Session } from '../runtime.ts';
import { CalibratingGraphBuilder, Int8GraphBuilder, isRangeOutput, recordRanges, type ConvRanges, type Int8Layers } from './int8-graph.ts';
import { cosineSimilarity, relativeError } from './quality.ts';

/** An int8 network's error bound per call against fp32 on the calibration inputs (docs/int8.md). */
export interface Int8Bound {
  /** Lowest cosine similarity of the output (the UNet's noise prediction, the decoded image) accepted. */
  minCosine: number;
  /** Largest relative RMS error of the output accepted. */
  maxRelativeError: number;
}

export const DEFAULT_INT8_BOUND: Int8Bound = { minCosine: 0.995, maxRelativeError: 0.1 };
/** UNet evaluations recorded before the int8 graph is built: one 20-step generation. */
export const DEFAULT_CALIBRATION_EVALUATIONS = 20;
/** The VAE decoder's bound on the decoded image (values in [-1, 1]), checked on the calibration decodes. */
export const VAE_INT8_BOUND: Int8Bound = { minCosine: 0.999, maxRelativeError: 0.05 };
/** Decodes recorded before the int8 VAE decoder is built: the first generation's. */
export const VAE_CALIBRATION_DECODES = 1;
/** Evaluations kept to check the int8 graph against (spread over the calibration). */
const VALIDATION_SAMPLES = 4;
const STATE_VERSION = 1;

export interface Int8Verdict {
  status: 'ready' | 'refused';
  ranges: ConvRanges;
  /** Worst cosine similarity and relative error over the validation samples. */
  minCosine: number;
  maxRelativeError: number;
  bound: Int8Bound;
  evaluations: number;
  layers?: Int8Layers;
  reason?: string;
}

export interface Int8NetworkHooks {
  /**
   * Opens the session whose graph is keyed by the fp32 network's options plus `options`, built with `makeBuilder`;
   * `build` replaces the network's own build for a variant graph (step reuse).
   */
  open(options: Record<string, unknown>, makeBuilder: (network: string, dir: string) => GraphBuilder, build?: (b: GraphBuilder) => void): Promise<Session>;
  /** The plain fp32 network. */
  fp32(): Promise<Session>;
  log(line: string): void;
}

export interface Int8NetworkOptions {
  /** Names the network in log lines ("UNet", "VAE decoder"). */
  label: string;
  /** JSON file holding the ranges and verdict (beside the graph cache). */
  stateFile: string;
  calibrationEvaluations?: number;
  bound?: Int8Bound;
  /** Which layer kinds run in int8 (default all). */
  layers?: Int8Layers;
}

interface Sample {
  feeds: Record<string, Ort.Tensor>;
  output: Float32Array;
}

export class Int8Network {
  private verdict: Int8Verdict | undefined;
  private readonly ranges: ConvRanges = {};
  private evaluations = 0;
  private readonly samples: Sample[] = [];
  private calibrating: Promise<Session> | undefined;
  private int8: Promise<Session> | undefined;
  /** int8 graphs of variant builds (step reuse), by their options; in memory instead of the plain int8 graph. */
  private readonly variants = new Map<string, Promise<Session>>();
  private finishing: Promise<void> | undefined;
  private refusalLogged = false;
  private readonly wanted: number;
  private readonly bound: Int8Bound;

  constructor(
    private readonly hooks: Int8NetworkHooks,
    private readonly opts: Int8NetworkOptions,
  ) {
    this.wanted = Math.max(1, opts.calibrationEvaluations ?? DEFAULT_CALIBRATION_EVALUATIONS);
    this.bound = opts.bound ?? DEFAULT_INT8_BOUND;
    this.verdict = readVerdict(opts.stateFile, this.bound, opts.layers ?? 'all');
  }

  /** 'calibrating' until the verdict, then 'int8' or 'fp32' (refused). */
  get state(): 'calibrating' | 'int8' | 'fp32' {
    return this.verdict ? (this.verdict.status === 'ready' ? 'int8' : 'fp32') : 'calibrating';
  }

  /** The verdict with its measured figures, once made. */
  get result(): Int8Verdict | undefined {
    return this.verdict;
  }

  /** The session for the next generation's calls (ask once per generation, not per step). */
  async session(): Promise<Session> {
    await this.settle();
    const v = this.verdict;
    if (!v) {
      if (!this.calibrating) {
        const opening = this.hooks.open({ calibration: 'int8-ranges' }, (n, d) => new CalibratingGraphBuilder(n, d)).then((s) => this.recording(s));
        // A session that failed to open is tried again by the next generation, not remembered.
        opening.catch(() => {
          if (this.calibrating === opening) this.calibrating = undefined;
        });
        this.calibrating = opening;
      }
      return this.calibrating;
    }
    if (v.status === 'refused') {
      if (!this.refusalLogged) this.hooks.log(`${this.opts.label} int8 refused, running fp32: ${v.reason}`);
      this.refusalLogged = true;
      return this.hooks.fp32();
    }
    return this.openInt8(v.ranges);
  }

  /** Makes the verdict if calibration is complete (building and checking the int8 graph); returns the state. */
  async settle(): Promise<'calibrating' | 'int8' | 'fp32'> {
    if (!this.verdict && this.evaluations >= this.wanted) {
      this.finishing ??= this.finish();
      await this.finishing;
    }
    return this.state;
  }

  /**
   * The int8 graph of a variant build of this network (the step-reuse graphs): the same layer names, so the same
   * calibrated ranges. Only once the int8 graph is ready (settle() === 'int8'). Opening a variant frees the plain
   * int8 session, and the plain session frees the variants, so one set of int8 weights stays in memory.
   */
  variant(options: Record<string, unknown>, build: (b: GraphBuilder) => void): Promise<Session> {
    const v = this.verdict;
    if (v?.status !== 'ready') throw new Error(`internal error: ${this.opts.label} int8 variant asked for before the int8 graph is ready`);
    const layers = this.opts.layers ?? 'all';
    const key = JSON.stringify(options);
    let s = this.variants.get(key);
    if (!s) {
      this.drop(this.int8);
      this.int8 = undefined;
      const opening = this.hooks.open(
        { ...options, quantized: 'int8', layers, ranges: rangesHash(v.ranges) },
        (n, d) => new Int8GraphBuilder(n, d, v.ranges, layers),
        build,
      );
      opening.catch(() => {
        if (this.variants.get(key) === opening) this.variants.delete(key);
      });
      this.variants.set(key, opening);
      s = opening;
    }
    return s;
  }

  private drop(session: Promise<Session> | undefined): void {
    session?.then((x) => x.release()).catch(() => undefined);
  }

  private openInt8(ranges: ConvRanges): Promise<Session> {
    const layers = this.opts.layers ?? 'all';
    if (!this.int8) {
      for (const s of this.variants.values()) this.drop(s);
      this.variants.clear();
      const opening = this.hooks.open({ quantized: 'int8', layers, ranges: rangesHash(ranges) }, (n, d) => new Int8GraphBuilder(n, d, ranges, layers));
      opening.catch(() => {
        if (this.int8 === opening) this.int8 = undefined;
      });
      this.int8 = opening;
    }
    return this.int8;
  }

  /** The calibration session: records ranges (and a few samples) on each run and returns only the UNet's outputs. */
  private recording(session: Session): Session {
    const keep = new Set(Array.from({ length: VALIDATION_SAMPLES }, (_, i) => Math.round((i * (this.wanted - 1)) / (VALIDATION_SAMPLES - 1))));
    const run = async (feeds: Ort.InferenceSession.FeedsType, ...rest: unknown[]) => {
      const results = await (session.run as (...a: unknown[]) => Promise<Ort.InferenceSession.ReturnType>)(feeds, ...rest);
      const own: Record<string, Ort.OnnxValue> = {};
      const ranges: Record<string, { data: ArrayLike<number> }> = {};
      for (const [name, t] of Object.entries(results)) {
        if (isRangeOutput(name)) ranges[name] = t as unknown as { data: ArrayLike<number> };
        else own[name] = t;
      }
      // Every run of the calibrating session widens the ranges: a generation keeps this session to its end, so a
      // tiled VAE decode's other tiles (and a UNet pass longer than `wanted` calls) are covered, not just the first.
      if (!this.finishing) recordRanges(this.ranges, ranges);
      if (this.evaluations < this.wanted) {
        const first = Object.values(own)[0];
        if (keep.has(this.evaluations) && first) this.samples.push({ feeds: copyFeeds(feeds), output: Float32Array.from(first.data as Float32Array) });
        this.evaluations++;
      }
      return own;
    };
    return new Proxy(session, {
      get(target, prop) {
        if (prop === 'run') return run;
        if (prop === 'outputNames') return target.outputNames.filter((n) => !isRangeOutput(n));
        const v = Reflect.get(target, prop, target);
        return typeof v === 'function' ? v.bind(target) : v;
      },
    });
  }

  /** Builds the int8 graph, checks it against the kept fp32 outputs and stores the verdict. */
  private async finish(): Promise<void> {
    const calibration = this.calibrating;
    this.calibrating = undefined;
    if (calibration) await (await calibration).release().catch(() => undefined);
    // A copy: the int8 graph and the stored verdict must hold the same ranges whatever still runs on the calibrating session.
    const ranges: ConvRanges = structuredClone(this.ranges);
    let minCosine = 1;
    let maxRelativeError = 0;
    let reason: string | undefined;
    let failed = false;
    try {
      const session = await this.openInt8(ranges);
      for (const s of this.samples) {
        const out = Object.values(await session.run(s.feeds))[0];
        const data = out?.data as Float32Array | undefined;
        if (!data || data.length !== s.output.length) throw new Error('the int8 graph gave no output of the fp32 shape');
        if (!data.every(Number.isFinite)) throw new Error('the int8 graph gave non-finite values');
        minCosine = Math.min(minCosine, cosineSimilarity(data, s.output));
        maxRelativeError = Math.max(maxRelativeError, relativeError(data, s.output));
      }
      if (minCosine < this.bound.minCosine || maxRelativeError > this.bound.maxRelativeError) {
        reason = `calibration error beyond the bound: cosine ${minCosine.toFixed(4)} (needs >= ${this.bound.minCosine}), relative error ${maxRelativeError.toFixed(4)} (needs <= ${this.bound.maxRelativeError})`;
      }
    } catch (e) {
      reason = `the int8 graph failed: ${(e as Error).message}`;
      failed = true;
    }
    if (reason) {
      const s = this.int8;
      this.int8 = undefined;
      if (s) await (await s.catch(() => undefined))?.release().catch(() => undefined);
    }
    this.verdict = {
      status: reason ? 'refused' : 'ready',
      ranges,
      minCosine,
      maxRelativeError,
      bound: this.bound,
      evaluations: this.evaluations,
      layers: this.opts.layers ?? 'all',
      reason,
    };
    this.samples.length = 0;
    if (!reason)
      this.hooks.log(
        `${this.opts.label} int8 ready: cosine >= ${minCosine.toFixed(4)}, relative error <= ${maxRelativeError.toFixed(4)} over ${this.evaluations} calibration evaluations`,
      );
    // A measured verdict is kept; a failure (out of memory, say) holds for this process only.
    if (!failed) writeVerdict(this.opts.stateFile, this.verdict);
  }

  /** Frees the sessions this object opened (the fp32 one belongs to the caller). */
  async release(): Promise<void> {
    for (const p of [this.calibrating, this.int8, ...this.variants.values()]) if (p) await (await p.catch(() => undefined))?.release().catch(() => undefined);
    this.calibrating = undefined;
    this.int8 = undefined;
    this.variants.clear();
  }
}

function copyFeeds(feeds: Ort.InferenceSession.FeedsType): Record<string, Ort.Tensor> {
  const out: Record<string, Ort.Tensor> = {};
  for (const [name, t] of Object.entries(feeds)) {
    const T = t.constructor as new (type: string, data: unknown, dims: readonly number[]) => Ort.Tensor;
    out[name] = new T(t.type, (t.data as Float32Array).slice(), t.dims);
  }
  return out;
}

export function rangesHash(ranges: ConvRanges): string {
  const sorted = Object.keys(ranges)
    .sort()
    .map((k) => [k, ranges[k]]);
  return createHash('sha256').update(JSON.stringify(sorted)).digest('hex').slice(0, 16);
}

/** A stored verdict, if it was made under the same bound (a changed bound calibrates again). */
function readVerdict(file: string, bound: Int8Bound, layers: Int8Layers): Int8Verdict | undefined {
  if (!existsSync(file)) return undefined;
  try {
    const v = JSON.parse(readFileSync(file, 'utf8')) as Int8Verdict & { version?: number };
    if (v.version !== STATE_VERSION || (v.status !== 'ready' && v.status !== 'refused')) return undefined;
    if (v.bound?.minCosine !== bound.minCosine || v.bound?.maxRelativeError !== bound.maxRelativeError || (v.layers ?? 'all') !== layers) return undefined;
    return v;
  } catch {
    return undefined; // unreadable: calibrate again
  }
}

function writeVerdict(file: string, v: Int8Verdict): void {
  try {
    mkdirSync(dirname(file), { recursive: true });
    writeFileSync(`${file}.tmp`, JSON.stringify({ version: STATE_VERSION, ...v }, null, 1));
    renameSync(`${file}.tmp`, file);
  } catch {
    // A read-only cache: the verdict holds for this process only.
  }
}
