// The bench's LoRA part (`npm run bench -- --parts lora`, included by default): LoRA apply and switch costs at real
// SD1.5 / SDXL shapes with random weights. Two random LoRA files at kohya's usual targets (attention q/k/v/out,
// feed-forward, proj_in/out at rank 32, LoCon resnet convs at rank 16, text-encoder attention + MLP at rank 32),
// written as PEFT-named safetensors, go through the engine's own path (open, parse, branch feeds, the branch
// graphs). Reported: first use (branch graphs built + sessions + feeds + text encoding), switch to the other LoRA,
// switch back, each as the time to the first sampling step, then that step; the graph cache's growth per
// combination; and one no-LoRA UNet step on the plain graph vs the branch graph fed rank 0.
// With `feedsOnly` (SDXL by default: two fp32 UNet sessions need ~21 GB) only the file and feed work is timed.
import { mkdirSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildClipTextEncoder, clipTextGraphOptions } from '../src/engine/nets/clip-text.ts';
import { buildUnet, parseUnetConfig, unetGraphOptions, unetParameterShapes, type UnetAttentionKind } from '../src/engine/nets/unet.ts';
import { getOrBuildGraph } from '../src/engine/onnx/cache.ts';
import type { GraphBuilder } from '../src/engine/onnx/graph.ts';
import { openSession, runSession, withExtraInputs, type Feed, type Session } from '../src/engine/runtime.ts';
import type { Tensor } from '../src/engine/tensor.ts';
import { branchFeeds, openLora, type BranchInputInfo, type BranchPatch } from '../src/engine/weights/lora/index.ts';
import { writeSafetensors, type TensorToWrite } from '../src/engine/weights/safetensors.ts';
import { clipTextParameterShapes, RandomWeights } from './random-weights.ts';
import type { ModelSpec } from './specs.ts';

export interface LoraSwitchArgs {
  threads: number;
  attention: UnetAttentionKind;
  cacheOptimized: boolean;
  /** No sessions: time only the file reading and the branch feeds. */
  feedsOnly: boolean;
  runs: number;
}

export interface SwitchTiming {
  /** Open + parse the file, make the branch feeds, encode the prompt pair: the time to the first sampling step. */
  toFirstStepS: number;
  /** Of which: making the UNet's and text encoders' feeds (the LoRA-specific CPU work). */
  feedsS: number;
  /** The first UNet evaluation after the switch (CFG batch 2). */
  firstStepS?: number;
  /** Graph-cache growth on disk, bytes. */
  cacheGrowthBytes: number;
}

export interface LoraSwitchReport {
  loraFileMB: number;
  unetSites: number;
  /** First use: the branch graphs' build and sessions (once per model), then the switch itself. */
  firstUse: SwitchTiming & { buildS: number; sessionS: number };
  switchToOther: SwitchTiming;
  switchBack: SwitchTiming;
  /** One no-LoRA UNet step, best of runs: the plain graph, and the branch graph fed rank-0 factors. */
  noLoraStepS?: { plain: number; branchRank0: number };
}

const KOHYA_UNET = /(attn[12]\.(to_q|to_k|to_v|to_out\.0)|ff\.net\.0\.proj|ff\.net\.2|proj_in|proj_out)$/;
const LOCON_UNET = /resnets\.\d+\.(conv1|conv2)$/;
const KOHYA_TE = /self_attn\.(q|k|v|out)_proj$|mlp\.fc[12]$/;

function dirBytes(dir: string): number {
  let n = 0;
  for (const f of readdirSync(dir, { recursive: true })) {
    const st = statSync(join(dir, String(f)));
    if (st.isFile()) n += st.size;
  }
  return n;
}

function randomBytes(n: number, seed: number, amplitude: number): Uint8Array {
  const a = new Float32Array(n);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    a[i] = (s / 2 ** 32 - 0.5) * amplitude;
  }
  return new Uint8Array(a.buffer);
}

/** A random PEFT-named LoRA for the model's layers (kohya's usual targets), fp16-sized like real files are not: fp32. */
function writeRandomLora(file: string, spec: ModelSpec, seed: number): void {
  const tensors: Record<string, TensorToWrite> = {};
  const add = (prefix: string, path: string, shape: number[], rank: number) => {
    const [out, inn] = [shape[0]!, shape[1]!];
    const kernel = shape.slice(2);
    const downShape = [rank, inn, ...kernel];
    const upShape = [out, rank, ...kernel.map(() => 1)];
    const n = (s: number[]) => s.reduce((a, b) => a * b, 1);
    tensors[`${prefix}.${path}.lora_A.weight`] = { dtype: 'F32', shape: downShape, bytes: randomBytes(n(downShape), seed++, 0.1) };
    tensors[`${prefix}.${path}.lora_B.weight`] = { dtype: 'F32', shape: upShape, bytes: randomBytes(n(upShape), seed++, 0.01) };
  };
  for (const [name, shape] of unetParameterShapes(spec.unet)) {
    if (!name.endsWith('.weight') || shape.length < 2) continue;
    const path = name.slice(0, -'.weight'.length);
    if (KOHYA_UNET.test(path)) add('unet', path, shape, 32);
    else if (LOCON_UNET.test(path)) add('unet', path, shape, 16);
  }
  spec.textEncoders.forEach((te, i) => {
    for (const [name, shape] of clipTextParameterShapes(te.config)) {
      const path = name.slice(0, -'.weight'.length);
      if (name.endsWith('.weight') && KOHYA_TE.test(path)) add(i === 0 ? 'text_encoder' : 'text_encoder_2', path, shape, 32);
    }
  });
  writeSafetensors(file, tensors);
}

/** The file's modules as branch patches per component (PEFT keys name the diffusers path directly). */
function patchesOf(file: string, components: string[]): Map<string, Map<string, BranchPatch[]>> {
  const lora = openLora(file);
  const out = new Map(components.map((c) => [c, new Map<string, BranchPatch[]>()]));
  for (const module of lora.parsed.modules) {
    const dot = module.key.indexOf('.');
    const sites = out.get(module.key.slice(0, dot));
    if (sites) sites.set(module.key.slice(dot + 1), [{ dict: lora.dict, module, multiplier: 0.8 }]);
  }
  return out;
}

/** The branch inputs a session would declare, from the parameter shapes (for feedsOnly; same layout rule as the nets). */
function declaredInputs(shapes: Map<string, number[]>, accepts: (path: string) => boolean): BranchInputInfo[] {
  const out: BranchInputInfo[] = [];
  for (const [name, shape] of shapes) {
    if (!name.endsWith('.weight') || shape.length < 2) continue;
    const path = name.slice(0, -'.weight'.length);
    if (!accepts(path)) continue;
    const conv = shape.length === 4 && !/proj_(in|out)$/.test(path);
    const r = `lora_rank:${path}`;
    out.push({ name: `lora_down:${path}`, shape: conv ? [r, shape[1]!, ...shape.slice(2)] : [r, shape[1]!] });
    out.push({ name: `lora_up:${path}`, shape: conv ? [shape[0]!, r, 1, 1] : [shape[0]!, r] });
  }
  return out;
}

function randomTensor(shape: number[], seed: number): Tensor {
  return {
    shape,
    data: new Float32Array(
      randomBytes(
        shape.reduce((a, b) => a * b, 1),
        seed,
        1,
      ).buffer,
    ),
  };
}

export async function benchLoraSwitch(spec: ModelSpec, args: LoraSwitchArgs, cacheDir: string, log: (s: string) => void): Promise<LoraSwitchReport> {
  const work = mkdtempSync(join(tmpdir(), 'kiln-lora-switch-'));
  const sessions: Session[] = [];
  try {
    mkdirSync(join(work, 'loras'));
    const files = ['a', 'b'].map((n, i) => {
      const f = join(work, 'loras', `${spec.name}-${n}.safetensors`);
      writeRandomLora(f, spec, 1000 * (i + 1));
      return f;
    });
    const components = ['unet', 'text_encoder', 'text_encoder_2'].slice(0, 1 + spec.textEncoders.length);
    const cfg = parseUnetConfig(spec.unet);
    const unetShapes = unetParameterShapes(spec.unet);
    const batch = 2;
    const latent = spec.size / 8;
    const tokens = 77;

    const open = async (network: string, options: Record<string, unknown>, build: (b: GraphBuilder) => void) => {
      const t0 = performance.now();
      const { modelPath } = getOrBuildGraph(cacheDir, { network, weightsIdentity: 'random-seed-1', precision: 'fp32', options }, build);
      const t1 = performance.now();
      const { session } = await openSession(modelPath, { device: 'cpu', intraOpThreads: args.threads, cacheOptimized: args.cacheOptimized });
      sessions.push(session);
      return { session, buildS: (t1 - t0) / 1000, sessionS: (performance.now() - t1) / 1000 };
    };

    // Branch graphs (once per model): UNet and text encoders.
    let unetBranch: Session | undefined;
    const teBranch: Session[] = [];
    let buildS = 0;
    let sessionS = 0;
    const before = dirBytes(cacheDir);
    const t0 = performance.now();
    if (!args.feedsOnly) {
      const weights = new RandomWeights('unet', unetShapes, 1);
      const u = await open(`${spec.name}-unet`, unetGraphOptions({ attention: args.attention, loraBranches: true }), (b) =>
        buildUnet(b, weights, cfg, { attention: args.attention, loraBranches: true }),
      );
      unetBranch = u.session;
      buildS += u.buildS;
      sessionS += u.sessionS;
      for (const [i, te] of spec.textEncoders.entries()) {
        const w = new RandomWeights(`text_encoder_${i}`, clipTextParameterShapes(te.config), 10 + i);
        const opts = { ...te.opts, loraBranches: true };
        const s = await open(`${spec.name}-text-encoder-${i}`, clipTextGraphOptions(opts), (b) => buildClipTextEncoder(b, w, te.config, opts));
        teBranch.push(s.session);
        buildS += s.buildS;
        sessionS += s.sessionS;
      }
    }
    const unetFeeds: Record<string, Feed> = {
      sample: randomTensor([batch, cfg.inChannels, latent, latent], 7),
      timestep: { shape: [batch], data: Float32Array.from([500, 500]) },
      encoder_hidden_states: randomTensor([batch, tokens, cfg.crossAttentionDim], 8),
    };
    if (cfg.textTime) {
      unetFeeds.text_embeds = randomTensor([batch, cfg.textTime.projectionInputDim - 6 * cfg.textTime.timeEmbedDim], 9);
      unetFeeds.time_ids = { shape: [batch, 6], data: Float32Array.from({ length: 12 }, (_, i) => (i % 6 === 2 || i % 6 === 3 ? 0 : spec.size)) };
    }
    const ids = new BigInt64Array(batch * tokens);
    for (let i = 0; i < ids.length; i++) ids[i] = BigInt((i * 7919) % 49406);
    for (let bi = 0; bi < batch; bi++) ids[bi * tokens + tokens - 1] = 49407n;

    const unetInputs = unetBranch
      ? unetBranch.inputMetadata.map((m) => ({ name: m.name, shape: m.isTensor ? m.shape : [] }))
      : declaredInputs(unetShapes, () => true);
    const teInputs = spec.textEncoders.map((te, i) =>
      teBranch[i]
        ? teBranch[i].inputMetadata.map((m) => ({ name: m.name, shape: m.isTensor ? m.shape : [] }))
        : declaredInputs(clipTextParameterShapes(te.config), (p) => KOHYA_TE.test(p)),
    );

    /** One switch: open the file, make every component's feeds, encode the prompts, then the first UNet step. */
    const switchTo = async (file: string, startedAt: number): Promise<SwitchTiming> => {
      const bytes = dirBytes(cacheDir);
      const f0 = performance.now();
      const patches = patchesOf(file, components);
      const unetExtra = branchFeeds(unetInputs, patches.get('unet')!);
      const teExtra = teInputs.map((inputs, i) => branchFeeds(inputs, patches.get(components[i + 1]!)!));
      const feedsS = (performance.now() - f0) / 1000;
      let firstStepS: number | undefined;
      if (unetBranch) {
        for (const [i, s] of teBranch.entries())
          await runSession(
            withExtraInputs(s, () => teExtra[i]!),
            { input_ids: { int64: ids, shape: [batch, tokens] } },
          );
        const unet = withExtraInputs(unetBranch, () => unetExtra);
        const toFirstStepS = (performance.now() - startedAt) / 1000;
        const s0 = performance.now();
        await runSession(unet, unetFeeds);
        firstStepS = (performance.now() - s0) / 1000;
        return { toFirstStepS, feedsS, firstStepS, cacheGrowthBytes: dirBytes(cacheDir) - bytes };
      }
      return { toFirstStepS: (performance.now() - startedAt) / 1000, feedsS, cacheGrowthBytes: dirBytes(cacheDir) - bytes };
    };

    const first = await switchTo(files[0]!, t0);
    const firstUse = { ...first, cacheGrowthBytes: dirBytes(cacheDir) - before, buildS, sessionS };
    log(`  LoRA first use: ${firstUse.toFirstStepS.toFixed(2)} s to the first step`);
    const switchToOther = await switchTo(files[1]!, performance.now());
    log(`  LoRA switch: ${switchToOther.toFirstStepS.toFixed(2)} s to the first step`);
    const switchBack = await switchTo(files[0]!, performance.now());

    let noLoraStepS: LoraSwitchReport['noLoraStepS'];
    if (unetBranch) {
      const weights = new RandomWeights('unet', unetShapes, 1);
      const plain = await open(`${spec.name}-unet`, unetGraphOptions({ attention: args.attention }), (b) =>
        buildUnet(b, weights, cfg, { attention: args.attention }),
      );
      const rank0 = withExtraInputs(unetBranch, (inputs) => branchFeeds(inputs, new Map()));
      const best = async (s: Session) => {
        let b = Infinity;
        for (let r = 0; r < args.runs; r++) {
          const t = performance.now();
          await runSession(s, unetFeeds);
          b = Math.min(b, (performance.now() - t) / 1000);
        }
        return b;
      };
      // Interleaved, so a change in the machine's load hits both alike.
      const p1 = await best(plain.session);
      const b1 = await best(rank0);
      noLoraStepS = { plain: Math.min(p1, await best(plain.session)), branchRank0: Math.min(b1, await best(rank0)) };
    }
    return {
      loraFileMB: statSync(files[0]!).size / 1e6,
      unetSites: unetInputs.filter((i) => i.name.startsWith('lora_down:')).length,
      firstUse,
      switchToOther,
      switchBack,
      noLoraStepS,
    };
  } finally {
    for (const s of sessions) await s.release();
    rmSync(work, { recursive: true, force: true });
  }
}
