// diffusers UNet2DConditionModel as an ONNX graph, driven by the model's config.json: SD1.x (conv projections),
// SD2.x (linear projections, per-block heads) and SDXL (text_time added embedding, several transformer layers
// per block). Graph inputs: sample [batch, C, h, w], timestep [batch] (float, one per sample),
// encoder_hidden_states [batch, tokens, dim] (tokens dynamic for long prompts), and for SDXL text_embeds
// [batch, D] and time_ids [batch, 6]. Output: out [batch, outC, h, w].
import { KilnInputError } from '../api.ts';
import type { GraphBuilder, Value } from '../onnx/graph.ts';
import type { WeightSource } from '../weights/types.ts';
import {
  conv,
  downsample,
  groupNorm,
  resnetBlock,
  timestepMlp,
  timestepSinusoids,
  toCompute,
  transformer2d,
  upsample,
  type UnetAttentionKind,
} from './blocks.ts';

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
  for (const [field, ok] of [['act_fn', 'silu'], ['center_input_sample', false], ['conv_in_kernel', 3], ['conv_out_kernel', 3], ['mid_block_scale_factor', 1], ['resnet_out_scale_factor', 1], ['downsample_padding', 1]] as const) {
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
}

/** The build options that change the graph, for the cache key (GraphKey.options). */
export function unetGraphOptions(opts: UnetBuildOptions = {}): Record<string, unknown> {
  return { attention: opts.attention ?? DEFAULT_ATTENTION, timeIds: opts.timeIds ?? 6 };
}

export const DEFAULT_ATTENTION: UnetAttentionKind = 'contrib';

/** Builds the whole UNet into `b` (inputs, graph, output "out"). `config` is the raw config.json or a parsed one. */
export function buildUnet(b: GraphBuilder, weights: WeightSource, config: UnetGraphConfig | Record<string, unknown>, opts: UnetBuildOptions = {}): void {
  const cfg = 'blockOutChannels' in config ? (config as UnetGraphConfig) : parseUnetConfig(config as Record<string, unknown>);
  const kind = opts.attention ?? DEFAULT_ATTENTION;
  const n = cfg.blockOutChannels.length;
  const groups = cfg.normGroups;
  const resOpts = { groups, eps: cfg.normEps };

  const sample = b.input(UNET_IO.sample, ['batch', cfg.inChannels, 'height', 'width']);
  const timestep = b.input(UNET_IO.timestep, ['batch'], 'float', { keepFloat32: true });
  const context = b.input(UNET_IO.context, ['batch', 'tokens', cfg.crossAttentionDim]);

  // Time embedding (the sinusoids stay fp32: t * freq reaches ~1000 radians).
  const t0 = cfg.blockOutChannels[0]!;
  let emb = timestepMlp(b, weights, 'time_embedding', toCompute(b, timestepSinusoids(b, timestep, t0, cfg.flipSinToCos, cfg.freqShift)));
  if (cfg.textTime) {
    const { timeEmbedDim, projectionInputDim } = cfg.textTime;
    const nIds = opts.timeIds ?? 6;
    const textDim = projectionInputDim - nIds * timeEmbedDim;
    const textEmbeds = b.input(UNET_IO.textEmbeds, ['batch', textDim]);
    const timeIds = b.input(UNET_IO.timeIds, ['batch', nIds], 'float', { keepFloat32: true });
    const idEmb = timestepSinusoids(b, b.reshape(timeIds, [-1]), timeEmbedDim, cfg.flipSinToCos, cfg.freqShift);
    const idFlat = toCompute(b, b.reshape(idEmb, [-1, nIds * timeEmbedDim]));
    emb = b.add(emb, timestepMlp(b, weights, 'add_embedding', b.concat([textEmbeds, idFlat], 1)));
  }
  const tembAct = b.silu(emb);

  const attn = (i: number, layers: number) => ({
    heads: cfg.heads[i]!,
    layers,
    groups,
    kind,
    upcast: cfg.upcastAttention,
  });

  // Down path; every resnet/attention output and every downsampler output is a skip connection.
  let h = conv(b, weights, 'conv_in', sample, { pad: 1 });
  const skips: Value[] = [h];
  for (let i = 0; i < n; i++) {
    const p = `down_blocks.${i}`;
    const cross = cfg.downBlockTypes[i] === 'CrossAttnDownBlock2D';
    for (let j = 0; j < cfg.layersPerBlock[i]!; j++) {
      h = resnetBlock(b, weights, `${p}.resnets.${j}`, h, tembAct, resOpts);
      if (cross) h = transformer2d(b, weights, `${p}.attentions.${j}`, h, context, attn(i, cfg.transformerLayers[i]!));
      skips.push(h);
    }
    if (i < n - 1) {
      h = downsample(b, weights, `${p}.downsamplers.0`, h);
      skips.push(h);
    }
  }

  h = resnetBlock(b, weights, 'mid_block.resnets.0', h, tembAct, resOpts);
  h = transformer2d(b, weights, 'mid_block.attentions.0', h, context, attn(n - 1, cfg.transformerLayers[n - 1]!));
  h = resnetBlock(b, weights, 'mid_block.resnets.1', h, tembAct, resOpts);

  // Up path: block i mirrors down block n-1-i and has one more resnet, each eating one skip.
  const reversedLayers = [...cfg.layersPerBlock].reverse();
  for (let i = 0; i < n; i++) {
    const p = `up_blocks.${i}`;
    const cross = cfg.upBlockTypes[i] === 'CrossAttnUpBlock2D';
    const mirror = n - 1 - i;
    for (let j = 0; j < reversedLayers[i]! + 1; j++) {
      const skip = skips.pop();
      if (!skip) throw configError('layers_per_block', 'up blocks need more skip connections than the down blocks made');
      h = resnetBlock(b, weights, `${p}.resnets.${j}`, b.concat([h, skip], 1), tembAct, resOpts);
      if (cross) h = transformer2d(b, weights, `${p}.attentions.${j}`, h, context, attn(mirror, cfg.upTransformerLayers[i]!));
    }
    if (i < n - 1) h = upsample(b, weights, `${p}.upsamplers.0`, h, skips[skips.length - 1] ?? null);
  }

  h = b.silu(groupNorm(b, weights, 'conv_norm_out', h, groups, cfg.normEps));
  h = conv(b, weights, 'conv_out', h, { pad: 1 });
  b.output(h, UNET_IO.out, ['batch', cfg.outChannels, 'height', 'width']);
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
 * attention matmuls; norms and elementwise ops are left out as they are a rounding error). Mirrors buildUnet.
 */
export function unetFlops(config: UnetGraphConfig | Record<string, unknown>, dims: UnetDims): number {
  const cfg = 'blockOutChannels' in config ? (config as UnetGraphConfig) : parseUnetConfig(config as Record<string, unknown>);
  const n = cfg.blockOutChannels.length;
  const B = dims.batch;
  let macs = 0;
  const convMacs = (cin: number, cout: number, k: number, hw: number) => (macs += B * hw * cin * cout * k * k);
  const resnet = (cin: number, cout: number, hw: number) => {
    convMacs(cin, cout, 3, hw);
    convMacs(cout, cout, 3, hw);
    if (cin !== cout) convMacs(cin, cout, 1, hw);
  };
  const transformer = (c: number, layers: number, hw: number) => {
    const T = dims.tokens;
    macs += 2 * B * hw * c * c; // proj_in, proj_out
    for (let l = 0; l < layers; l++) {
      macs += B * hw * c * c * 4; // self q k v out
      macs += B * hw * c * c * 2 + B * T * cfg.crossAttentionDim * c * 2; // cross q, out; k, v over the tokens
      macs += B * hw * hw * c * 2; // self-attention QK^T and PV
      macs += B * hw * T * c * 2; // cross-attention
      macs += B * hw * c * 8 * c + B * hw * 4 * c * c; // GEGLU in (2 x 4c) and out
    }
  };
  let hw = dims.height * dims.width;
  const sizes: number[] = [];
  let hh = dims.height;
  let ww = dims.width;
  convMacs(cfg.inChannels, cfg.blockOutChannels[0]!, 3, hw);
  const skipCh: number[] = [cfg.blockOutChannels[0]!];
  let ch = cfg.blockOutChannels[0]!;
  for (let i = 0; i < n; i++) {
    const out = cfg.blockOutChannels[i]!;
    sizes.push(hw);
    for (let j = 0; j < cfg.layersPerBlock[i]!; j++) {
      resnet(ch, out, hw);
      ch = out;
      if (cfg.downBlockTypes[i] === 'CrossAttnDownBlock2D') transformer(out, cfg.transformerLayers[i]!, hw);
      skipCh.push(out);
    }
    if (i < n - 1) {
      hh = Math.floor((hh - 1) / 2) + 1;
      ww = Math.floor((ww - 1) / 2) + 1;
      const next = hh * ww;
      convMacs(out, out, 3, next);
      hw = next;
      skipCh.push(out);
    }
  }
  resnet(ch, ch, hw);
  transformer(ch, cfg.transformerLayers[n - 1]!, hw);
  resnet(ch, ch, hw);
  const rev = [...cfg.blockOutChannels].reverse();
  const reversedLayers = [...cfg.layersPerBlock].reverse();
  for (let i = 0; i < n; i++) {
    const out = rev[i]!;
    for (let j = 0; j < reversedLayers[i]! + 1; j++) {
      const skip = skipCh.pop()!;
      resnet(ch + skip, out, hw);
      ch = out;
      if (cfg.upBlockTypes[i] === 'CrossAttnUpBlock2D') transformer(out, cfg.upTransformerLayers[i]!, hw);
    }
    if (i < n - 1) {
      hw = sizes[n - 2 - i]!;
      convMacs(out, out, 3, hw);
    }
  }
  convMacs(ch, cfg.outChannels, 3, hw);
  return 2 * macs;
}

/**
 * Every parameter name buildUnet reads, with its shape, as diffusers stores them. Used to check a checkpoint
 * against its config and to synthesise random-weight models of real size (benchmarks).
 */
export function unetParameterShapes(config: UnetGraphConfig | Record<string, unknown>): Map<string, number[]> {
  const cfg = 'blockOutChannels' in config ? (config as UnetGraphConfig) : parseUnetConfig(config as Record<string, unknown>);
  const shapes = new Map<string, number[]>();
  const c0 = cfg.blockOutChannels[0]!;
  const tdim = 4 * c0;
  const lin = (p: string, out: number, inn: number, bias = true) => {
    shapes.set(`${p}.weight`, [out, inn]);
    if (bias) shapes.set(`${p}.bias`, [out]);
  };
  const convP = (p: string, out: number, inn: number, k: number) => {
    shapes.set(`${p}.weight`, [out, inn, k, k]);
    shapes.set(`${p}.bias`, [out]);
  };
  const norm = (p: string, c: number) => {
    shapes.set(`${p}.weight`, [c]);
    shapes.set(`${p}.bias`, [c]);
  };
  const resnet = (p: string, cin: number, cout: number) => {
    norm(`${p}.norm1`, cin);
    convP(`${p}.conv1`, cout, cin, 3);
    lin(`${p}.time_emb_proj`, cout, tdim);
    norm(`${p}.norm2`, cout);
    convP(`${p}.conv2`, cout, cout, 3);
    if (cin !== cout) convP(`${p}.conv_shortcut`, cout, cin, 1);
  };
  const transformer = (p: string, c: number, layers: number) => {
    norm(`${p}.norm`, c);
    const proj = (q: string) => (cfg.useLinearProjection ? lin(q, c, c) : convP(q, c, c, 1));
    proj(`${p}.proj_in`);
    for (let l = 0; l < layers; l++) {
      const t = `${p}.transformer_blocks.${l}`;
      for (const k of ['norm1', 'norm2', 'norm3']) norm(`${t}.${k}`, c);
      for (const [a, kvDim] of [['attn1', c], ['attn2', cfg.crossAttentionDim]] as const) {
        lin(`${t}.${a}.to_q`, c, c, false);
        lin(`${t}.${a}.to_k`, c, kvDim, false);
        lin(`${t}.${a}.to_v`, c, kvDim, false);
        lin(`${t}.${a}.to_out.0`, c, c);
      }
      lin(`${t}.ff.net.0.proj`, 8 * c, c);
      lin(`${t}.ff.net.2`, c, 4 * c);
    }
    proj(`${p}.proj_out`);
  };
  lin('time_embedding.linear_1', tdim, c0);
  lin('time_embedding.linear_2', tdim, tdim);
  if (cfg.textTime) {
    lin('add_embedding.linear_1', tdim, cfg.textTime.projectionInputDim);
    lin('add_embedding.linear_2', tdim, tdim);
  }
  convP('conv_in', c0, cfg.inChannels, 3);
  const n = cfg.blockOutChannels.length;
  const skipCh: number[] = [c0];
  let ch = c0;
  for (let i = 0; i < n; i++) {
    const out = cfg.blockOutChannels[i]!;
    for (let j = 0; j < cfg.layersPerBlock[i]!; j++) {
      resnet(`down_blocks.${i}.resnets.${j}`, ch, out);
      ch = out;
      if (cfg.downBlockTypes[i] === 'CrossAttnDownBlock2D') transformer(`down_blocks.${i}.attentions.${j}`, out, cfg.transformerLayers[i]!);
      skipCh.push(out);
    }
    if (i < n - 1) {
      convP(`down_blocks.${i}.downsamplers.0.conv`, out, out, 3);
      skipCh.push(out);
    }
  }
  resnet('mid_block.resnets.0', ch, ch);
  transformer('mid_block.attentions.0', ch, cfg.transformerLayers[n - 1]!);
  resnet('mid_block.resnets.1', ch, ch);
  const rev = [...cfg.blockOutChannels].reverse();
  const reversedLayers = [...cfg.layersPerBlock].reverse();
  for (let i = 0; i < n; i++) {
    const out = rev[i]!;
    for (let j = 0; j < reversedLayers[i]! + 1; j++) {
      resnet(`up_blocks.${i}.resnets.${j}`, ch + skipCh.pop()!, out);
      ch = out;
      if (cfg.upBlockTypes[i] === 'CrossAttnUpBlock2D') transformer(`up_blocks.${i}.attentions.${j}`, out, cfg.upTransformerLayers[i]!);
    }
    if (i < n - 1) convP(`up_blocks.${i}.upsamplers.0.conv`, out, out, 3);
  }
  norm('conv_norm_out', ch);
  convP('conv_out', cfg.outChannels, ch, 3);
  return shapes;
}
