// ESRGAN / Real-ESRGAN RRDBNet as an ONNX graph, from weights in either key layout. Keys are first brought to
// the old ESRGAN layout (`model.N...`) as spandrel does (ESRGAN/__init__.py), then the hyper-parameters are
// read off the keys: nf, nb, in/out channels, the number of x2 upsample stages, and a pixel-unshuffle input
// (Real-ESRGAN x2/x1: in_nc = out_nc * 4 or * 16). gc is whatever conv1's output says (32 in every real file).
import { float, type GraphBuilder, type Value } from '../onnx/graph.ts';
import type { Tensor } from '../tensor.ts';
import { renamed, requireShape, stripCommonPrefix, type TensorSource, UpscalerFormatError } from './upscaler-weights.ts';

export interface RrdbConfig {
  inChannels: number;
  outChannels: number;
  features: number;
  blocks: number;
  /** x2 nearest-upsample stages inside the net. */
  upsampleStages: number;
  /** Input pixel-unshuffle factor (1 = none); the overall scale is 2^upsampleStages / shuffle. */
  shuffle: number;
  /** Overall output/input size ratio. */
  scale: number;
}

/** True when the keys look like an RRDBNet in any of the layouts spandrel detects. */
export function isRrdbNet(names: readonly string[]): boolean {
  const has = (...keys: string[]) => keys.every((k) => names.includes(k));
  return (
    has('model.0.weight', 'model.1.sub.0.RDB1.conv1.0.weight') ||
    has('conv_first.weight', 'body.0.rdb1.conv1.weight', 'conv_body.weight', 'conv_last.weight') ||
    has('conv_first.weight', 'RRDB_trunk.0.RDB1.conv1.weight', 'trunk_conv.weight', 'conv_last.weight')
  );
}

/** The old-layout name of a new/BSRGAN-layout module (`TRUNK` stands for the trunk conv, whose index needs nb). */
function oldLayoutStem(stem: string, upCount: number): string | undefined {
  if (stem === 'conv_first') return 'model.0';
  if (stem === 'conv_body' || stem === 'trunk_conv') return 'TRUNK';
  if (stem === 'conv_hr' || stem === 'HRconv') return `model.${3 * upCount + 2}`;
  if (stem === 'conv_last') return `model.${3 * upCount + 4}`;
  const block = /^(?:body|RRDB_trunk)\.(\d+)\.(?:rdb|RDB)(\d)\.conv(\d)$/.exec(stem);
  if (block) return `model.1.sub.${block[1]}.RDB${block[2]}.conv${block[3]}.0`;
  const up = /^(?:conv_up|upconv)(\d+)$/.exec(stem);
  if (up) return `model.${3 * Number(up[1])}`;
  return undefined;
}

/** The weights under old-layout names (`model.0`, `model.1.sub.N.RDBM.convK.0`, ...), whatever layout they came in. */
export function toOldRrdbLayout(source: TensorSource): TensorSource {
  const src = stripCommonPrefix(source);
  const names = src.names();
  if (names.includes('model.0.weight')) return src;
  const map = new Map<string, string>();
  const ups = names.map((n) => /^(?:conv_up|upconv)(\d+)\./.exec(n)).filter((m) => m !== null);
  const upCount = Math.max(0, ...ups.map((m) => Number(m[1])));
  for (const name of names) {
    const [stem, param] = [name.slice(0, name.lastIndexOf('.')), name.slice(name.lastIndexOf('.') + 1)];
    const to = oldLayoutStem(stem, upCount);
    if (to === undefined) throw new UpscalerFormatError(`unexpected RRDBNet weight ${name}`);
    map.set(`${to}.${param}`, name);
  }
  const blocks = new Set(names.map((n) => /^(?:body|RRDB_trunk)\.(\d+)\./.exec(n)?.[1]).filter((b) => b !== undefined)).size;
  for (const [to, from] of [...map]) {
    if (!to.startsWith('TRUNK.')) continue;
    map.delete(to);
    map.set(to.replace('TRUNK', `model.1.sub.${blocks}`), from);
  }
  return renamed(src, map);
}

/** Hyper-parameters from old-layout keys (spandrel's rules). */
export function rrdbConfig(old: TensorSource): RrdbConfig {
  const names = old.names();
  const indices = names
    .map((n) => /^model\.(\d+)\./.exec(n))
    .filter((m) => m !== null)
    .map((m) => Number(m[1]));
  const last = Math.max(...indices);
  const seqLen = last + 1;
  if ((seqLen - 5) % 3 !== 0 || seqLen < 5) throw new UpscalerFormatError(`RRDBNet with ${seqLen} top-level layers is not a supported ESRGAN layout`);
  const upsampleStages = (seqLen - 5) / 3;
  const blocks = new Set(names.map((n) => /^model\.1\.sub\.(\d+)\.RDB/.exec(n)?.[1]).filter((b) => b !== undefined)).size;
  const [features, inChannels] = requireShape(old, 'model.0.weight', 4) as [number, number];
  const outChannels = requireShape(old, `model.${last}.weight`, 4)[0]!;
  let shuffle = 1;
  if (inChannels === outChannels * 4) shuffle = 2;
  else if (inChannels === outChannels * 16) shuffle = 4;
  const scale = 2 ** upsampleStages / shuffle;
  if (!Number.isInteger(scale) || scale < 1) throw new UpscalerFormatError(`RRDBNet scale ${scale} is not supported`);
  if (names.some((n) => n.includes('conv1x1'))) throw new UpscalerFormatError('ESRGAN+ (conv1x1 residuals) is not supported');
  return { inChannels: inChannels / shuffle ** 2, outChannels, features, blocks, upsampleStages, shuffle, scale };
}

/** torch's nearest upsampling by an integer factor (src = floor(dst / f)); int64 sizes keep it precision-agnostic. */
export function nearestUpsample(b: GraphBuilder, x: Value, factor: number): Value {
  const sizes = b.mul(b.shapeOf(x), b.constInt64([1, 1, factor, factor]));
  return b.op('Resize', [x, null, null, sizes], { mode: 'nearest', coordinate_transformation_mode: 'asymmetric', nearest_mode: 'floor' });
}

function lrelu(b: GraphBuilder, x: Value): Value {
  return b.op('LeakyRelu', [x], { alpha: float(0.2) });
}

/** conv_first for a pixel-unshuffled input: its input channels reordered so SpaceToDepth's DCR order feeds it. */
function unshuffledConvFirst(weight: Tensor, channels: number, r: number): Tensor {
  // torch pixel_unshuffle puts in[c, r*y+dy, r*x+dx] at channel c*r^2 + dy*r + dx; SpaceToDepth puts it at
  // (dy*r + dx)*C + c. Permuting the conv's input channels is free, unlike a Gather on the activations.
  const [out, inCh, kh, kw] = weight.shape as [number, number, number, number];
  const k = kh * kw;
  const data = new Float32Array(weight.data.length);
  for (let o = 0; o < out; o++)
    for (let c = 0; c < channels; c++)
      for (let p = 0; p < r * r; p++) {
        const from = (o * inCh + c * r * r + p) * k;
        const to = (o * inCh + p * channels + c) * k;
        data.set(weight.data.subarray(from, from + k), to);
      }
  return { shape: weight.shape, data };
}

/** Builds the net: input `image` [1, C, H, W] (H, W multiples of the shuffle factor), output `upscaled`. */
export function buildRrdbNet(b: GraphBuilder, old: TensorSource, cfg: RrdbConfig): void {
  const w = (name: string) => old.get(name);
  const conv = (x: Value, stem: string, weight?: Tensor) => b.conv(x, weight ?? w(`${stem}.weight`), w(`${stem}.bias`), stem, { pad: 1 });
  let x = b.input('image', [1, cfg.inChannels, 'height', 'width']);
  let firstWeight = w('model.0.weight');
  if (cfg.shuffle > 1) {
    x = b.op('SpaceToDepth', [x], { blocksize: cfg.shuffle });
    firstWeight = unshuffledConvFirst(firstWeight, cfg.inChannels, cfg.shuffle);
  }
  const fea = conv(x, 'model.0', firstWeight);
  let trunk = fea;
  for (let n = 0; n < cfg.blocks; n++) {
    const rrdbIn = trunk;
    let h = trunk;
    for (let r = 1; r <= 3; r++) {
      const stem = `model.1.sub.${n}.RDB${r}`;
      const feats = [h];
      for (let k = 1; k <= 4; k++) feats.push(lrelu(b, conv(b.concat(feats, 1), `${stem}.conv${k}.0`)));
      const x5 = conv(b.concat(feats, 1), `${stem}.conv5.0`);
      h = b.add(b.scale(x5, 0.2), h);
    }
    trunk = b.add(b.scale(h, 0.2), rrdbIn);
  }
  let out = b.add(fea, conv(trunk, `model.1.sub.${cfg.blocks}`));
  for (let s = 1; s <= cfg.upsampleStages; s++) {
    out = nearestUpsample(b, out, 2);
    out = lrelu(b, conv(out, `model.${3 * s}`));
  }
  const hr = lrelu(b, conv(out, `model.${3 * cfg.upsampleStages + 2}`));
  out = conv(hr, `model.${3 * cfg.upsampleStages + 4}`);
  b.output(out, 'upscaled', [1, cfg.outChannels, 'out_height', 'out_width']);
}
