// facexlib's ParseNet (PSFRGAN's face-parsing network) as an ONNX graph: the mask FaceRestoreHelper pastes restored
// faces through (use_parse=True, as A1111 runs it). An encoder of stride-2 residual blocks, a body of residual blocks,
// a nearest-upsampling decoder, then a 19-class parsing head and an image head. Every ConvLayer is: optional x2
// nearest upsample, reflection pad, conv (stride 2 going down), BatchNorm (eval) and LeakyReLU 0.2 where present.
// Widths, depth and steps come from the weights, so the released parsing_parsenet.pth and smaller copies both build.
import { float, type GraphBuilder, type Value } from '../onnx/graph.ts';
import { nearestUpsample } from './rrdbnet.ts';
import type { TensorSource } from './upscaler-weights.ts';

export class FaceNetFormatError extends Error {}

const BN_EPS = 1e-5;

function has(src: TensorSource, name: string): boolean {
  return src.names().includes(name);
}

/** One facexlib ConvLayer under `prefix` (`<prefix>.conv2d`, `<prefix>.norm.norm`). */
function convLayer(b: GraphBuilder, src: TensorSource, x: Value, prefix: string, scale: 'none' | 'down' | 'up', relu: boolean): Value {
  const weight = src.get(`${prefix}.conv2d.weight`);
  const k = weight.shape[2]!;
  if (scale === 'up') x = nearestUpsample(b, x, 2);
  const pad = Math.ceil((k - 1) / 2);
  if (pad > 0) x = b.op('Pad', [x, b.constInt64([0, 0, pad, pad, 0, 0, pad, pad])], { mode: 'reflect' });
  const bias = has(src, `${prefix}.conv2d.bias`) ? src.get(`${prefix}.conv2d.bias`) : undefined;
  x = b.conv(x, weight, bias, `${prefix}.conv2d`, { stride: scale === 'down' ? 2 : 1, pad: 0 });
  const bn = `${prefix}.norm.norm`;
  if (has(src, `${bn}.running_mean`)) {
    x = b.op(
      'BatchNormalization',
      [
        x,
        b.weight(`${bn}.weight`, src.get(`${bn}.weight`)),
        b.weight(`${bn}.bias`, src.get(`${bn}.bias`)),
        b.weight(`${bn}.running_mean`, src.get(`${bn}.running_mean`)),
        b.weight(`${bn}.running_var`, src.get(`${bn}.running_var`)),
      ],
      { epsilon: float(BN_EPS) },
    );
  }
  return relu ? b.op('LeakyRelu', [x], { alpha: float(0.2) }) : x;
}

/** facexlib ResidualBlock: shortcut (identity, or a plain ConvLayer when the scale or width changes) + two convs. */
function residualBlock(b: GraphBuilder, src: TensorSource, x: Value, prefix: string, scale: 'none' | 'down' | 'up'): Value {
  const identity = has(src, `${prefix}.shortcut_func.conv2d.weight`) ? convLayer(b, src, x, `${prefix}.shortcut_func`, scale, false) : x;
  const res = convLayer(b, src, x, `${prefix}.conv1`, scale === 'up' ? 'up' : 'none', true);
  return b.add(identity, convLayer(b, src, res, `${prefix}.conv2`, scale === 'down' ? 'down' : 'none', false));
}

function count(src: TensorSource, group: string): number {
  const ids = new Set(src.names().flatMap((n) => (n.startsWith(`${group}.`) ? [Number(n.split('.')[1])] : [])));
  return ids.size;
}

/** Input `image` [1, 3, H, W] in [-1, 1] (RGB); outputs `mask` [1, 19, H, W] (class logits) and `image_out`. */
export function buildParseNet(b: GraphBuilder, src: TensorSource): void {
  if (!has(src, 'encoder.0.conv2d.weight') || !has(src, 'out_mask_conv.conv2d.weight')) {
    throw new FaceNetFormatError('not a ParseNet: encoder.0.conv2d.weight or out_mask_conv.conv2d.weight is missing');
  }
  const encoder = count(src, 'encoder');
  const body = count(src, 'body');
  const decoder = count(src, 'decoder');
  const parsingChannels = src.shape('out_mask_conv.conv2d.weight')[0]!;
  const input = b.input('image', [1, 3, 'height', 'width']);
  let feat = convLayer(b, src, input, 'encoder.0', 'none', false);
  for (let i = 1; i < encoder; i++) feat = residualBlock(b, src, feat, `encoder.${i}`, 'down');
  let x = feat;
  for (let i = 0; i < body; i++) x = residualBlock(b, src, x, `body.${i}`, 'none');
  x = b.add(feat, x);
  for (let i = 0; i < decoder; i++) x = residualBlock(b, src, x, `decoder.${i}`, 'up');
  b.output(convLayer(b, src, x, 'out_mask_conv', 'none', false), 'mask', [1, parsingChannels, 'height', 'width']);
  b.output(convLayer(b, src, x, 'out_img_conv', 'none', false), 'image_out', [1, 3, 'height', 'width']);
}
