// diffusers UNet2DConditionModel as an ONNX graph, driven by the model's config.json: SD1.x (conv projections),
// SD2.x (linear projections, per-block heads) and SDXL (text_time added embedding, several transformer layers
// per block). Graph inputs: sample [batch, C, h, w], timestep [batch] (float, one per sample),
// encoder_hidden_states [batch, tokens, dim] (tokens dynamic for long prompts), and for SDXL text_embeds
// [batch, D] and time_ids [batch, 6]. Output: out [batch, outC, h, w].
import { KilnInputError, type Tiling } from '../api.ts';
import type { GraphBuilder, Value } from '../onnx/graph.ts';
import type { WeightSource } from '../weights/types.ts';
import { NetWeights, timestepSinusoids, toCompute, type UnetAttentionKind } from './blocks.ts';
import { LORA_BRANCH_SITES_VERSION, LoraBranchSites } from './lora-branch.ts';
import { buildBlock, buildSteps, outputChannels, planFlops, planParameters, type BuildContext, type Step, type TimestepMlpStep } from './plan.ts';

export type { UnetAttentionKind } from './blocks.ts';

type DownBlockType = 'CrossAttnDownBlock2D' | 'DownBlock2D';
type UpBlockType = 'CrossAttnUpBlock2D' | 'UpBlock2D';

/** The subset of a diffusers UNet2DConditionModel config that shapes the graph, normalised per block. */
export interface UnetGraphConfig {
  inChannels: number;
  outChannels: number;
  blockOutChannels: number[];
  layersPerBlock: number[];
  downBlockTypes: DownBlockType[];
  upBlockTypes: UpBlockType[];
  /** Attention heads per down block (diffusers: num_attention_heads, else attention_head_dim). */
  heads: number[];
  transformerLayers: number[];
  /** Transformer layers per up block (reverse_transformer_layers_per_block, else the down list reversed). */
  upTransformerLayers: number[];
  crossAttentionDim: number;
  useLinearProjection: boolean;
  upcastAttention: boolean;
  normGroups: number;
  normEps: number;
  flipSinToCos: boolean;
  freqShift: number;
  /** SDXL: addition_embed_type "text_time". */
  textTime?: { timeEmbedDim: number; projectionInputDim: number };
}

/** Graph input/output names. */
export const UNET_IO = {
  /** [batch, in_channels, h, w] latents (already scaled by the scheduler). */
  sample: 'sample',
  /** float [batch]: one timestep per sample (CFG pairs repeat it). */
  timestep: 'timestep',
  /** [batch, tokens, cross_attention_dim]; tokens may be 77, 154, 231, ... */
  context: 'encoder_hidden_states',
  /** SDXL only: pooled text embeddings [batch, projection_class_embeddings_input_dim - 6 * addition_time_embed_dim]. */
  textEmbeds: 'text_embeds',
  /** SDXL only: [batch, 6] original size, crop top-left, target size. */
  timeIds: 'time_ids',
  /** [batch, out_channels, h, w]: epsilon or v, as the model was trained. */
  out: 'out',
  /**
   * Step reuse (DeepCache): the up path's activation where the shallow graph takes over, an extra output of the
   * 'full' graph and an input of the 'shallow' one.
   */
  deepFeature: 'deep_feature',
} as const;

const SUPPORTED_DOWN = new Set(['CrossAttnDownBlock2D', 'DownBlock2D']);
const SUPPORTED_UP = new Set(['CrossAttnUpBlock2D', 'UpBlock2D']);

function configError(field: string, message: string): KilnInputError {
  return new KilnInputError(`unet config ${field}: ${message}`, field);
}

function perBlock(raw: unknown, n: number, field: string): number[] {
  if (typeof raw === 'number') return new Array<number>(n).fill(raw);
  if (Array.isArray(raw) && raw.length === n && raw.every((x) => typeof x === 'number')) return raw as number[];
  throw configError(field, `expected a number or a list of ${n} numbers, got ${JSON.stringify(raw)}`);
}

function num(raw: Record<string, unknown>, field: string, fallback?: number): number {
  const v = raw[field] ?? fallback;
  if (typeof v !== 'number') throw configError(field, `expected a number, got ${JSON.stringify(v)}`);
  return v;
}

/** Reads diffusers' unet/config.json; rejects features the graph does not implement, naming the field. */
export function parseUnetConfig(raw: Record<string, unknown>): UnetGraphConfig {
  const blockOutChannels = raw.block_out_channels as number[];
  if (!Array.isArray(blockOutChannels) || blockOutChannels.length === 0) throw configError('block_out_channels', 'missing');
  const n = blockOutChannels.length;
  const downBlockTypes = raw.down_block_types as string[];
  const upBlockTypes = raw.up_block_types as string[];
  if (!Array.isArray(downBlockTypes) || downBlockTypes.length !== n || !downBlockTypes.every((t) => SUPPORTED_DOWN.has(t))) {
    throw configError('down_block_types', `expected ${n} of ${[...SUPPORTED_DOWN].join('/')}, got ${JSON.stringify(downBlockTypes)}`);
  }
  if (!Array.isArray(upBlockTypes) || upBlockTypes.length !== n || !upBlockTypes.every((t) => SUPPORTED_UP.has(t))) {
    throw configError('up_block_types', `expected ${n} of ${[...SUPPORTED_UP].join('/')}, got ${JSON.stringify(upBlockTypes)}`);
  }
  const midType = raw.mid_block_type ?? 'UNetMidBlock2DCrossAttn';
  if (midType !== 'UNetMidBlock2DCrossAttn') throw configError('mid_block_type', `unsupported ${JSON.stringify(midType)}`);
  const unsupported: [string, unknown][] = [
    ['class_embed_type', null],
    ['encoder_hid_dim_type', null],
    ['time_cond_proj_dim', null],
    ['time_embedding_type', 'positional'],
    ['resnet_time_scale_shift', 'default'],
    ['attention_type', 'default'],
    ['only_cross_attention', false],
    ['dual_cross_attention', false],
    ['time_embedding_act_fn', null],
    ['timestep_post_act', null],
    ['time_embedding_dim', null],
    ['cross_attention_norm', null],
  ];
  for (const [field, ok] of unsupported) {
    const v = raw[field];
    if (v !== undefined && v !== ok) throw configError(field, `${JSON.stringify(v)} is not supported (only ${JSON.stringify(ok)})`);
  }
  for (const [field, ok] of [
    ['act_fn', 'silu'],
    ['center_input_sample', false],
    ['conv_in_kernel', 3],
    ['conv_out_kernel', 3],
    ['mid_block_scale_factor', 1],
    ['resnet_out_scale_factor', 1],
    ['downsample_padding', 1],
  ] as const) {
    const v = raw[field];
    if (v !== undefined && v !== ok) throw configError(field, `${JSON.stringify(v)} is not supported (only ${JSON.stringify(ok)})`);
  }
  // diffusers' naming quirk: SD1/SD2 configs put the number of heads in attention_head_dim.
  const headsRaw = raw.num_attention_heads ?? raw.attention_head_dim ?? 8;
  const heads = perBlock(headsRaw, n, raw.num_attention_heads != null ? 'num_attention_heads' : 'attention_head_dim');
  const transformerLayers = perBlock(raw.transformer_layers_per_block ?? 1, n, 'transformer_layers_per_block');
  let upTransformerLayers: number[];
  if (raw.reverse_transformer_layers_per_block != null) {
    const rev = raw.reverse_transformer_layers_per_block;
    if (!Array.isArray(rev) || rev.length !== n || !rev.every((x) => typeof x === 'number')) {
      throw configError('reverse_transformer_layers_per_block', 'nested per-layer lists are not supported');
    }
    upTransformerLayers = rev as number[];
  } else {
    upTransformerLayers = [...transformerLayers].reverse();
  }
  const crossAttentionDim = raw.cross_attention_dim;
  if (typeof crossAttentionDim !== 'number') throw configError('cross_attention_dim', `expected a number, got ${JSON.stringify(crossAttentionDim)}`);
  let textTime: UnetGraphConfig['textTime'];
  if (raw.addition_embed_type === 'text_time') {
    textTime = { timeEmbedDim: num(raw, 'addition_time_embed_dim'), projectionInputDim: num(raw, 'projection_class_embeddings_input_dim') };
  } else if (raw.addition_embed_type != null) {
    throw configError('addition_embed_type', `${JSON.stringify(raw.addition_embed_type)} is not supported (only "text_time")`);
  }
  return {
    inChannels: num(raw, 'in_channels', 4),
    outChannels: num(raw, 'out_channels', 4),
    blockOutChannels,
    layersPerBlock: perBlock(raw.layers_per_block ?? 2, n, 'layers_per_block'),
    downBlockTypes: downBlockTypes as DownBlockType[],
    upBlockTypes: upBlockTypes as UpBlockType[],
    heads,
    transformerLayers,
    upTransformerLayers,
    crossAttentionDim,
    useLinearProjection: raw.use_linear_projection === true,
    upcastAttention: raw.upcast_attention === true,
    normGroups: num(raw, 'norm_num_groups', 32),
    normEps: num(raw, 'norm_eps', 1e-5),
    flipSinToCos: raw.flip_sin_to_cos !== false,
    freqShift: num(raw, 'freq_shift', 0),
    textTime,
  };
}

export interface UnetBuildOptions {
  /** Attention and fused-kernel formulation; part of the graph cache key. Default 'contrib'. */
  attention?: UnetAttentionKind;
  /** SDXL micro-conditioning numbers per sample: 6 for the base (sizes, crop), 5 for the refiner (sizes, crop, aesthetic score). */
  timeIds?: number;
  /** Seamless tiling: a graph variant whose padded convolutions wrap around on these axes. */
  tiling?: Tiling;
  /** Every Linear/Conv site gets a LoRA branch whose factors are graph inputs (nets/lora-branch.ts). */
  loraBranches?: boolean;
  /** Step reuse (DeepCache): the whole UNet with the deep feature as an extra output, or the shallow graph that reuses it. */
  stepReuse?: StepReuseGraph;
}

/**
 * A step-reuse graph. `branch` picks where the UNet is cut, as DeepCache's cache_branch_id: the shallow graph
 * runs conv_in and the first `branch + 1` down layers (resnet + attention, or a downsampler), then the last
 * `branch + 2` up layers on the cached deep feature; 0 is the shallowest (fastest) cut.
 */
export interface StepReuseGraph {
  branch: number;
  part: 'full' | 'shallow';
}

/** Which UNet layers get LoRA branches in a branch graph: every Linear and Conv (all of them are sites). */
export function isUnetBranchSite(_path: string): boolean {
  return true;
}

/**
 * The build options that change the graph, for the cache key (GraphKey.options). `tiling` is only present when
 * set, so the key of an untiled graph is what it was before tiling existed.
 */
export function unetGraphOptions(opts: UnetBuildOptions = {}): Record<string, unknown> {
  return {
    attention: opts.attention ?? DEFAULT_ATTENTION,
    timeIds: opts.timeIds ?? 6,
    ...(opts.tiling ? { tiling: opts.tiling } : {}),
    ...(opts.loraBranches ? { loraBranches: LORA_BRANCH_SITES_VERSION } : {}),
    ...(opts.stepReuse ? { stepReuse: { ...opts.stepReuse, version: STEP_REUSE_VERSION } } : {}),
  };
}

/** Bumped when the step-reuse graphs change (the cut or its feature), so cached ones are rebuilt. */
const STEP_REUSE_VERSION = 1;

export const DEFAULT_ATTENTION: UnetAttentionKind = 'contrib';

/** The raw config.json or an already parsed one. */
function graphConfig(config: UnetGraphConfig | Record<string, unknown>): UnetGraphConfig {
  return 'blockOutChannels' in config ? (config as UnetGraphConfig) : parseUnetConfig(config as Record<string, unknown>);
}

/** The UNet as a plan: the embedding MLPs, then the body from `sample` to `out`. */
export interface UnetPlan {
  /** TimestepEmbedding of the sinusoids (block_out_channels[0] wide) into the time embedding. */
  timeEmbedding: TimestepMlpStep;
  /** SDXL: TimestepEmbedding of [text_embeds, time_ids sinusoids], added to the time embedding. */
  addEmbedding?: TimestepMlpStep;
  body: Step[];
}

/**
 * The one walk over the config: conv_in, the down blocks (every resnet/attention output and every downsampler
 * output is a skip connection), the mid block, the up blocks (block i mirrors down block n-1-i and has one
 * more resnet, each eating one skip), conv_norm_out and conv_out.
 */
export function unetPlan(config: UnetGraphConfig | Record<string, unknown>): UnetPlan {
  const cfg = graphConfig(config);
  const n = cfg.blockOutChannels.length;
  const c0 = cfg.blockOutChannels[0]!;
  const tembDim = 4 * c0;
  const groups = cfg.normGroups;
  const eps = cfg.normEps;
  const body: Step[] = [];
  const resnet = (prefix: string, cin: number, cout: number) => body.push({ kind: 'resnet', prefix, cin, cout, groups, eps, tembDim });
  const transformer = (prefix: string, channels: number, level: number, layers: number) =>
    body.push({
      kind: 'transformer',
      prefix,
      channels,
      layers,
      heads: cfg.heads[level]!,
      groups,
      contextDim: cfg.crossAttentionDim,
      linearProjection: cfg.useLinearProjection,
      upcast: cfg.upcastAttention,
    });
  const skipChannels: number[] = [];
  const pushSkip = (channels: number) => {
    body.push({ kind: 'pushSkip' });
    skipChannels.push(channels);
  };

  body.push({ kind: 'conv', prefix: 'conv_in', cin: cfg.inChannels, cout: c0, kernel: 3 });
  pushSkip(c0);
  let ch = c0;
  for (let i = 0; i < n; i++) {
    const p = `down_blocks.${i}`;
    const out = cfg.blockOutChannels[i]!;
    for (let j = 0; j < cfg.layersPerBlock[i]!; j++) {
      resnet(`${p}.resnets.${j}`, ch, out);
      ch = out;
      if (cfg.downBlockTypes[i] === 'CrossAttnDownBlock2D') transformer(`${p}.attentions.${j}`, out, i, cfg.transformerLayers[i]!);
      pushSkip(out);
    }
    if (i < n - 1) {
      body.push({ kind: 'downsample', prefix: `${p}.downsamplers.0`, channels: out, padding: 1 });
      pushSkip(out);
    }
  }

  resnet('mid_block.resnets.0', ch, ch);
  transformer('mid_block.attentions.0', ch, n - 1, cfg.transformerLayers[n - 1]!);
  resnet('mid_block.resnets.1', ch, ch);

  const reversedLayers = [...cfg.layersPerBlock].reverse();
  for (let i = 0; i < n; i++) {
    const p = `up_blocks.${i}`;
    const mirror = n - 1 - i;
    const out = cfg.blockOutChannels[mirror]!;
    for (let j = 0; j < reversedLayers[i]! + 1; j++) {
      const skip = skipChannels.pop();
      if (skip === undefined) throw configError('layers_per_block', 'up blocks need more skip connections than the down blocks made');
      body.push({ kind: 'concatSkip' });
      resnet(`${p}.resnets.${j}`, ch + skip, out);
      ch = out;
      if (cfg.upBlockTypes[i] === 'CrossAttnUpBlock2D') transformer(`${p}.attentions.${j}`, out, mirror, cfg.upTransformerLayers[i]!);
    }
    if (i < n - 1) {
      if (skipChannels.length === 0) throw configError('layers_per_block', 'an upsampler has no skip connection to take its size from');
      body.push({ kind: 'upsample', prefix: `${p}.upsamplers.0`, channels: out, how: 'resize', toSkip: true });
    }
  }

  body.push({ kind: 'normSilu', prefix: 'conv_norm_out', channels: ch, groups, eps });
  body.push({ kind: 'conv', prefix: 'conv_out', cin: ch, cout: cfg.outChannels, kernel: 3 });

  return {
    timeEmbedding: { kind: 'timestepMlp', prefix: 'time_embedding', inDim: c0, dim: tembDim },
    addEmbedding: cfg.textTime && { kind: 'timestepMlp', prefix: 'add_embedding', inDim: cfg.textTime.projectionInputDim, dim: tembDim },
    body,
  };
}

/** Where a step-reuse branch cuts the body: the shallow graph runs body[0, headEnd) and body[cut, end). */
export interface StepReuseCut {
  headEnd: number;
  cut: number;
  /** Channels of the deep feature (the activation entering body[cut]). */
  channels: number;
}

/** The deepest branch a UNet of this config can be cut at (the cut then sits right after the mid block). */
export function maxStepReuseBranch(config: UnetGraphConfig | Record<string, unknown>): number {
  return unetPlan(config).body.filter((s) => s.kind === 'pushSkip').length - 2;
}

/** Throws the 4xx a request's deep_cache.branch gets when this UNet cannot be cut there. */
export function checkStepReuseBranch(config: UnetGraphConfig | Record<string, unknown>, branch: number): void {
  stepReuseCut(unetPlan(config).body, branch);
}

/** The cut of `branch` (see StepReuseGraph): after the (branch + 2)th skip pushed, before the (branch + 2)th-last taken. */
export function stepReuseCut(body: readonly Step[], branch: number): StepReuseCut {
  const pushes = body.flatMap((s, i) => (s.kind === 'pushSkip' ? [i] : []));
  const concats = body.flatMap((s, i) => (s.kind === 'concatSkip' ? [i] : []));
  const kept = branch + 2;
  if (!Number.isInteger(branch) || branch < 0 || kept > pushes.length) {
    throw new KilnInputError(`deep_cache.branch must be an integer from 0 to ${pushes.length - 2} for this model, got ${branch}`, 'deep_cache.branch');
  }
  const cut = concats[concats.length - kept]!;
  let channels: number | undefined;
  for (let i = cut - 1; i >= 0 && channels === undefined; i--) channels = outputChannels(body[i]!);
  if (channels === undefined) throw new Error('internal error: a step-reuse cut with no block before it');
  return { headEnd: pushes[kept - 1]! + 1, cut, channels };
}

function allSteps(plan: UnetPlan): Step[] {
  return [plan.timeEmbedding, ...(plan.addEmbedding ? [plan.addEmbedding] : []), ...plan.body];
}

/** Builds the whole UNet into `b` (inputs, graph, output "out"). `config` is the raw config.json or a parsed one. */
export function buildUnet(b: GraphBuilder, weights: WeightSource, config: UnetGraphConfig | Record<string, unknown>, opts: UnetBuildOptions = {}): void {
  const cfg = graphConfig(config);
  const plan = unetPlan(cfg);
  const c: BuildContext = {
    b,
    w: new NetWeights(weights, 'UNet', opts.loraBranches ? new LoraBranchSites(isUnetBranchSite) : undefined),
    temb: null,
    context: null,
    attention: opts.attention ?? DEFAULT_ATTENTION,
    tiling: opts.tiling,
  };

  const sample = b.input(UNET_IO.sample, ['batch', cfg.inChannels, 'height', 'width']);
  const timestep = b.input(UNET_IO.timestep, ['batch'], 'float', { keepFloat32: true });
  const context = b.input(UNET_IO.context, ['batch', 'tokens', cfg.crossAttentionDim]);

  // Time embedding (the sinusoids stay fp32: t * freq reaches ~1000 radians).
  const sinusoids = timestepSinusoids(b, timestep, plan.timeEmbedding.inDim, cfg.flipSinToCos, cfg.freqShift);
  let emb = buildBlock(c, plan.timeEmbedding, toCompute(b, sinusoids));
  if (cfg.textTime && plan.addEmbedding) {
    const { timeEmbedDim, projectionInputDim } = cfg.textTime;
    const nIds = opts.timeIds ?? 6;
    const textDim = projectionInputDim - nIds * timeEmbedDim;
    const textEmbeds = b.input(UNET_IO.textEmbeds, ['batch', textDim]);
    const timeIds = b.input(UNET_IO.timeIds, ['batch', nIds], 'float', { keepFloat32: true });
    const idEmb = timestepSinusoids(b, b.reshape(timeIds, [-1]), timeEmbedDim, cfg.flipSinToCos, cfg.freqShift);
    const idFlat = toCompute(b, b.reshape(idEmb, [-1, nIds * timeEmbedDim]));
    emb = b.add(emb, buildBlock(c, plan.addEmbedding, b.concat([textEmbeds, idFlat], 1)));
  }

  const body: BuildContext = { ...c, temb: b.silu(emb), context };
  const reuse = opts.stepReuse;
  let out: Value;
  if (!reuse) out = buildSteps(body, plan.body, sample);
  else {
    // The skip stack is shared between the two halves: the tail takes exactly the skips the head pushed.
    const { headEnd, cut, channels } = stepReuseCut(plan.body, reuse.branch);
    const featureDims = ['batch', channels, 'feature_height', 'feature_width'];
    const skips: Value[] = [];
    let feature: Value;
    if (reuse.part === 'full') {
      feature = buildSteps(body, plan.body.slice(0, cut), sample, skips);
      b.output(feature, UNET_IO.deepFeature, featureDims);
    } else {
      buildSteps(body, plan.body.slice(0, headEnd), sample, skips);
      feature = b.input(UNET_IO.deepFeature, featureDims);
    }
    out = buildSteps(body, plan.body.slice(cut), feature, skips);
  }
  b.output(out, UNET_IO.out, ['batch', cfg.outChannels, 'height', 'width']);
}

export interface UnetDims {
  batch: number;
  /** Latent height and width. */
  height: number;
  width: number;
  tokens: number;
}

/**
 * Floating-point operations of one UNet evaluation (2 per multiply-add of convolutions, linears and the two
 * attention matmuls; norms, elementwise ops and the per-sample embedding projections are left out as a
 * rounding error): the FLOP fold of the plan buildUnet builds.
 */
export function unetFlops(config: UnetGraphConfig | Record<string, unknown>, dims: UnetDims): number {
  return planFlops(allSteps(unetPlan(config)), { h: dims.height, w: dims.width }, dims);
}

/**
 * Every parameter name buildUnet reads, with its shape, as diffusers stores them: the parameter fold of the
 * plan. Used to check a checkpoint against its config and to synthesise random-weight models of real size.
 */
export function unetParameterShapes(config: UnetGraphConfig | Record<string, unknown>): Map<string, number[]> {
  return planParameters(allSteps(unetPlan(config)));
}
