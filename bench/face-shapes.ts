// The state-dict key names and shapes of the four face networks A1111 runs, restated from their reference
// architectures so the bench can build them at the released sizes without the released files:
// - GFPGANv1Clean (TencentARC/GFPGAN gfpgan/archs/gfpganv1_clean_arch.py + stylegan2_clean_arch.py), v1.4 constructor;
// - CodeFormer (sczhou/CodeFormer basicsr/archs/codeformer_arch.py + vqgan_arch.py);
// - RetinaFace ResNet-50 (facexlib detection/retinaface.py over torchvision's resnet50 body);
// - ParseNet (facexlib parsing/parsenet.py).
// Each table takes the constructor's width parameters, so the tiny fixtures' key lists (same names, smaller widths)
// check the layout (test/bench/face-shapes.test.ts) and the released widths give the released files' sizes.

export type ShapeTable = Map<string, number[]>;

function conv(t: ShapeTable, name: string, out: number, inp: number, k: number, bias = true): void {
  t.set(`${name}.weight`, [out, inp, k, k]);
  if (bias) t.set(`${name}.bias`, [out]);
}

function linear(t: ShapeTable, name: string, out: number, inp: number, bias = true): void {
  t.set(`${name}.weight`, [out, inp]);
  if (bias) t.set(`${name}.bias`, [out]);
}

function norm(t: ShapeTable, name: string, channels: number): void {
  t.set(`${name}.weight`, [channels]);
  t.set(`${name}.bias`, [channels]);
}

function batchNorm(t: ShapeTable, name: string, channels: number): void {
  norm(t, name, channels);
  t.set(`${name}.running_mean`, [channels]);
  t.set(`${name}.running_var`, [channels]);
  t.set(`${name}.num_batches_tracked`, []);
}

export interface GfpganWidths {
  numStyleFeat: number;
  narrow: number;
  channelMultiplier: number;
  outSize: number;
}

/** GFPGANv1.4.pth's constructor (A1111 / spandrel): 512 style features, narrow 1, channel multiplier 2, 512 px. */
export const GFPGAN_V14: GfpganWidths = { numStyleFeat: 512, narrow: 1, channelMultiplier: 2, outSize: 512 };

function styleganChannels(narrow: number, cm: number): Record<number, number> {
  const c = (v: number) => Math.trunc(v * narrow);
  return { 4: c(512), 8: c(512), 16: c(512), 32: c(512), 64: c(256 * cm), 128: c(128 * cm), 256: c(64 * cm), 512: c(32 * cm), 1024: c(16 * cm) };
}

/** GFPGANv1Clean(out_size, num_style_feat, channel_multiplier, narrow, different_w=True, sft_half=True, num_mlp=8). */
export function gfpganShapes(w: GfpganWidths = GFPGAN_V14): ShapeTable {
  const t: ShapeTable = new Map();
  const S = w.numStyleFeat;
  const logSize = Math.log2(w.outSize);
  const unet = styleganChannels(w.narrow * 0.5, w.channelMultiplier);
  conv(t, 'conv_body_first', unet[w.outSize]!, 3, 1);
  const resBlock = (name: string, inp: number, out: number) => {
    conv(t, `${name}.conv1`, inp, inp, 3);
    conv(t, `${name}.conv2`, out, inp, 3);
    conv(t, `${name}.skip`, out, inp, 1, false);
  };
  let inp = unet[w.outSize]!;
  for (let i = logSize, n = 0; i > 2; i--, n++) {
    const out = unet[2 ** (i - 1)]!;
    resBlock(`conv_body_down.${n}`, inp, out);
    inp = out;
  }
  conv(t, 'final_conv', unet[4]!, inp, 3);
  inp = unet[4]!;
  for (let i = 3, n = 0; i <= logSize; i++, n++) {
    const out = unet[2 ** i]!;
    resBlock(`conv_body_up.${n}`, inp, out);
    inp = out;
  }
  for (let i = 3, n = 0; i <= logSize; i++, n++) conv(t, `toRGB.${n}`, 3, unet[2 ** i]!, 1);
  linear(t, 'final_linear', (logSize * 2 - 2) * S, unet[4]! * 16);

  // StyleGAN2GeneratorCSFT.
  const d = 'stylegan_decoder';
  const dec = styleganChannels(w.narrow, w.channelMultiplier);
  for (let i = 0; i < 8; i++) linear(t, `${d}.style_mlp.${2 * i + 1}`, S, S);
  t.set(`${d}.constant_input.weight`, [1, dec[4]!, 4, 4]);
  const modulated = (name: string, out: number, inp: number, k: number) => {
    t.set(`${name}.weight`, [1, out, inp, k, k]);
    linear(t, `${name}.modulation`, inp, S);
  };
  const styleConv = (name: string, inp: number, out: number) => {
    t.set(`${name}.weight`, [1]);
    t.set(`${name}.bias`, [1, out, 1, 1]);
    modulated(`${name}.modulated_conv`, out, inp, 3);
  };
  const toRgb = (name: string, inp: number) => {
    t.set(`${name}.bias`, [1, 3, 1, 1]);
    modulated(`${name}.modulated_conv`, 3, inp, 1);
  };
  styleConv(`${d}.style_conv1`, dec[4]!, dec[4]!);
  toRgb(`${d}.to_rgb1`, dec[4]!);
  inp = dec[4]!;
  for (let i = 3, n = 0; i <= logSize; i++, n++) {
    const out = dec[2 ** i]!;
    styleConv(`${d}.style_convs.${2 * n}`, inp, out);
    styleConv(`${d}.style_convs.${2 * n + 1}`, out, out);
    toRgb(`${d}.to_rgbs.${n}`, out);
    inp = out;
  }
  const layers = (logSize - 2) * 2 + 1;
  for (let i = 0; i < layers; i++) {
    const res = 2 ** Math.trunc((i + 5) / 2);
    t.set(`${d}.noises.noise${i}`, [1, 1, res, res]);
  }
  for (let i = 3, n = 0; i <= logSize; i++, n++) {
    const c = unet[2 ** i]!;
    for (const kind of ['condition_scale', 'condition_shift']) {
      conv(t, `${kind}.${n}.0`, c, c, 3);
      conv(t, `${kind}.${n}.2`, c, c, 3); // sft_half: out_channels, not 2x
    }
  }
  return t;
}

export interface CodeFormerWidths {
  /** The VQGAN's base width (64 in the release; the constructor hard-codes it). */
  nf: number;
  dimEmbd: number;
  codebookSize: number;
  nLayers: number;
  /** The fuse blocks' widths by feature size (the release: 16:512 ... 512:64, hard-coded). */
  fuseChannels: Record<string, number>;
  connectList: string[];
}

/** codeformer.pth (v0.1.0 release, what A1111 loads): dim_embd 512, n_head 8, 9 layers, codebook 1024. */
export const CODEFORMER_RELEASE: CodeFormerWidths = {
  nf: 64,
  dimEmbd: 512,
  codebookSize: 1024,
  nLayers: 9,
  fuseChannels: { '16': 512, '32': 256, '64': 256, '128': 128, '256': 128, '512': 64 },
  connectList: ['32', '64', '128', '256'],
};

/** CodeFormer(dim_embd, n_head, n_layers, codebook_size, connect_list) over VQAutoEncoder(512, nf, [1,2,2,4,4,8], 2 res blocks, attn at 16). */
export function codeformerShapes(w: CodeFormerWidths = CODEFORMER_RELEASE): ShapeTable {
  const t: ShapeTable = new Map();
  const EMB = 256;
  const chMult = [1, 2, 2, 4, 4, 8];
  const resBlock = (name: string, inp: number, out: number) => {
    norm(t, `${name}.norm1`, inp);
    conv(t, `${name}.conv1`, out, inp, 3);
    norm(t, `${name}.norm2`, out);
    conv(t, `${name}.conv2`, out, out, 3);
    if (inp !== out) conv(t, `${name}.conv_out`, out, inp, 1);
  };
  const attn = (name: string, c: number) => {
    norm(t, `${name}.norm`, c);
    for (const p of ['q', 'k', 'v', 'proj_out']) conv(t, `${name}.${p}`, c, c, 1);
  };
  t.set('position_emb', [256, w.dimEmbd]);

  // Encoder.
  let b = 0;
  const enc = (n: number) => `encoder.blocks.${n}`;
  conv(t, enc(b++), w.nf, 3, 3);
  let res = 512;
  let ch = w.nf;
  chMult.forEach((m, i) => {
    const out = w.nf * m;
    for (let r = 0; r < 2; r++) {
      resBlock(enc(b++), ch, out);
      ch = out;
      if (res === 16) attn(enc(b++), ch);
    }
    if (i !== chMult.length - 1) {
      conv(t, `${enc(b++)}.conv`, ch, ch, 3);
      res /= 2;
    }
  });
  resBlock(enc(b++), ch, ch);
  attn(enc(b++), ch);
  resBlock(enc(b++), ch, ch);
  norm(t, enc(b++), ch);
  conv(t, enc(b++), EMB, ch, 3);

  t.set('quantize.embedding.weight', [w.codebookSize, EMB]);

  // Generator.
  b = 0;
  const gen = (n: number) => `generator.blocks.${n}`;
  ch = w.nf * chMult[chMult.length - 1]!;
  res = 16;
  conv(t, gen(b++), ch, EMB, 3);
  resBlock(gen(b++), ch, ch);
  attn(gen(b++), ch);
  resBlock(gen(b++), ch, ch);
  for (let i = chMult.length - 1; i >= 0; i--) {
    const out = w.nf * chMult[i]!;
    for (let r = 0; r < 2; r++) {
      resBlock(gen(b++), ch, out);
      ch = out;
      if (res === 16) attn(gen(b++), ch);
    }
    if (i !== 0) {
      conv(t, `${gen(b++)}.conv`, ch, ch, 3);
      res *= 2;
    }
  }
  norm(t, gen(b++), ch);
  conv(t, gen(b++), 3, ch, 3);

  // Transformer and heads.
  const d = w.dimEmbd;
  linear(t, 'feat_emb', d, EMB);
  for (let i = 0; i < w.nLayers; i++) {
    const p = `ft_layers.${i}`;
    t.set(`${p}.self_attn.in_proj_weight`, [3 * d, d]);
    t.set(`${p}.self_attn.in_proj_bias`, [3 * d]);
    linear(t, `${p}.self_attn.out_proj`, d, d);
    linear(t, `${p}.linear1`, 2 * d, d);
    linear(t, `${p}.linear2`, d, 2 * d);
    norm(t, `${p}.norm1`, d);
    norm(t, `${p}.norm2`, d);
  }
  norm(t, 'idx_pred_layer.0', d);
  linear(t, 'idx_pred_layer.1', w.codebookSize, d, false);
  for (const size of w.connectList) {
    const c = w.fuseChannels[size]!;
    const p = `fuse_convs_dict.${size}`;
    resBlock(`${p}.encode_enc`, 2 * c, c);
    for (const kind of ['scale', 'shift']) {
      conv(t, `${p}.${kind}.0`, c, c, 3);
      conv(t, `${p}.${kind}.2`, c, c, 3);
    }
  }
  return t;
}

/** RetinaFace(network_name='resnet50'): torchvision resnet50 body (layers 1-4), FPN and SSH at 256, 2 anchors. */
export function retinafaceResnet50Shapes(): ShapeTable {
  const t: ShapeTable = new Map();
  conv(t, 'body.conv1', 64, 3, 7, false);
  batchNorm(t, 'body.bn1', 64);
  let inp = 64;
  [3, 4, 6, 3].forEach((blocks, l) => {
    const width = 64 * 2 ** l;
    for (let i = 0; i < blocks; i++) {
      const p = `body.layer${l + 1}.${i}`;
      conv(t, `${p}.conv1`, width, inp, 1, false);
      batchNorm(t, `${p}.bn1`, width);
      conv(t, `${p}.conv2`, width, width, 3, false);
      batchNorm(t, `${p}.bn2`, width);
      conv(t, `${p}.conv3`, width * 4, width, 1, false);
      batchNorm(t, `${p}.bn3`, width * 4);
      if (i === 0) {
        conv(t, `${p}.downsample.0`, width * 4, inp, 1, false);
        batchNorm(t, `${p}.downsample.1`, width * 4);
      }
      inp = width * 4;
    }
  });
  const convBn = (name: string, out: number, inp: number, k: number) => {
    conv(t, `${name}.0`, out, inp, k, false);
    batchNorm(t, `${name}.1`, out);
  };
  const OUT = 256;
  [512, 1024, 2048].forEach((c, i) => convBn(`fpn.output${i + 1}`, OUT, c, 1));
  convBn('fpn.merge1', OUT, OUT, 3);
  convBn('fpn.merge2', OUT, OUT, 3);
  for (const s of ['ssh1', 'ssh2', 'ssh3']) {
    convBn(`${s}.conv3X3`, OUT / 2, OUT, 3);
    convBn(`${s}.conv5X5_1`, OUT / 4, OUT, 3);
    convBn(`${s}.conv5X5_2`, OUT / 4, OUT / 4, 3);
    convBn(`${s}.conv7X7_2`, OUT / 4, OUT / 4, 3);
    convBn(`${s}.conv7x7_3`, OUT / 4, OUT / 4, 3);
  }
  for (const [head, k] of [
    ['ClassHead', 2],
    ['BboxHead', 4],
    ['LandmarkHead', 10],
  ] as const) {
    for (let i = 0; i < 3; i++) conv(t, `${head}.${i}.conv1x1`, 2 * k, OUT, 1);
  }
  return t;
}

export interface ParseNetWidths {
  baseCh: number;
  chRange: [number, number];
}

/** parsing_parsenet.pth: ParseNet(in_size=512, out_size=512, parsing_ch=19) with base_ch 64, ch_range [32, 256]. */
export const PARSENET_RELEASE: ParseNetWidths = { baseCh: 64, chRange: [32, 256] };

/** ParseNet(in 512, out 512, min_feat_size 32, res_depth 10, LeakyReLU, bn). */
export function parsenetShapes(w: ParseNetWidths = PARSENET_RELEASE): ShapeTable {
  const t: ShapeTable = new Map();
  const clip = (x: number) => Math.max(w.chRange[0], Math.min(x, w.chRange[1]));
  const plain = (name: string, out: number, inp: number) => conv(t, `${name}.conv2d`, out, inp, 3);
  const normed = (name: string, out: number, inp: number) => {
    conv(t, `${name}.conv2d`, out, inp, 3, false);
    batchNorm(t, `${name}.norm.norm`, out);
  };
  const residual = (name: string, inp: number, out: number, scaled: boolean) => {
    if (scaled || inp !== out) plain(`${name}.shortcut_func`, out, inp);
    normed(`${name}.conv1`, out, inp);
    normed(`${name}.conv2`, out, out);
  };
  const steps = Math.log2(512 / 32);
  plain('encoder.0', w.baseCh, 3);
  let head = w.baseCh;
  for (let i = 0; i < steps; i++) {
    residual(`encoder.${i + 1}`, clip(head), clip(head * 2), true);
    head *= 2;
  }
  for (let i = 0; i < 10; i++) residual(`body.${i}`, clip(head), clip(head), false);
  for (let i = 0; i < steps; i++) {
    residual(`decoder.${i}`, clip(head), clip(Math.trunc(head / 2)), true);
    head = Math.trunc(head / 2);
  }
  plain('out_img_conv', 3, clip(head));
  plain('out_mask_conv', 19, clip(head));
  return t;
}

/** Values in a table (num_batches_tracked counts as one, as in the state dict). */
export function valueCount(t: ShapeTable): number {
  let n = 0;
  for (const s of t.values()) n += s.reduce((a, b) => a * b, 1);
  return n;
}
