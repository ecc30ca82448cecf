// facexlib's RetinaFace detector as an ONNX graph: a backbone (torchvision ResNet-50, what A1111 loads as
// retinaface_resnet50, or MobileNetV1 x0.25), an FPN over its last three stages, an SSH context module per level and
// 1x1 heads for boxes, scores (softmax) and 5 landmarks with 2 anchors per cell. Post-processing (priors, decode,
// NMS) is pipelines/faces/detect.ts. The backbone is told apart by its keys (body.conv1 vs body.stage1).
import { float, type GraphBuilder, type Value } from '../onnx/graph.ts';
import { FaceNetFormatError } from './parsenet.ts';
import type { TensorSource } from './upscaler-weights.ts';

/** BGR means facexlib subtracts (no scaling). */
const MEAN_BGR = [104, 117, 123];

interface Ctx {
  b: GraphBuilder;
  src: TensorSource;
}

function bn(c: Ctx, x: Value, name: string): Value {
  const t = (k: string) => c.b.weight(`${name}.${k}`, c.src.get(`${name}.${k}`));
  return c.b.op('BatchNormalization', [x, t('weight'), t('bias'), t('running_mean'), t('running_var')], { epsilon: float(1e-5) });
}

function act(c: Ctx, x: Value, leaky: number): Value {
  return leaky === 0 ? c.b.op('Relu', [x]) : c.b.op('LeakyRelu', [x], { alpha: float(leaky) });
}

/** Conv (no bias) + BN under `<name>.0` / `<name>.1`, as facexlib's Sequential helpers name them. */
function convBn(c: Ctx, x: Value, name: string, stride: number, convIndex = 0, bnIndex = 1, group = 1): Value {
  const w = c.src.get(`${name}.${convIndex}.weight`);
  const k = w.shape[2]!;
  const y = c.b.conv(x, w, undefined, `${name}.${convIndex}`, { stride, pad: Math.floor(k / 2), group });
  return bn(c, y, `${name}.${bnIndex}`);
}

function mobileNet(c: Ctx, x: Value): Value[] {
  const strides: Record<string, number[]> = { stage1: [2, 1, 2, 1, 2, 1], stage2: [2, 1, 1, 1, 1, 1], stage3: [2, 1] };
  const outs: Value[] = [];
  for (const stage of ['stage1', 'stage2', 'stage3']) {
    strides[stage]!.forEach((stride, i) => {
      const name = `body.${stage}.${i}`;
      if (stage === 'stage1' && i === 0) {
        x = act(c, convBn(c, x, name, stride), 0.1);
      } else {
        const channels = c.src.shape(`${name}.0.weight`)[0]!;
        x = act(c, convBn(c, x, name, stride, 0, 1, channels), 0.1); // depthwise 3x3
        x = act(c, convBn(c, x, name, 1, 3, 4), 0.1); // pointwise 1x1
      }
    });
    outs.push(x);
  }
  return outs;
}

function resNet50(c: Ctx, x: Value): Value[] {
  const { b, src } = c;
  const conv = (v: Value, name: string, stride: number) => {
    const w = src.get(`${name}.weight`);
    return b.conv(v, w, undefined, name, { stride, pad: Math.floor(w.shape[2]! / 2) });
  };
  x = b.op('Relu', [bn(c, conv(x, 'body.conv1', 2), 'body.bn1')]);
  x = b.op('MaxPool', [x], { kernel_shape: [3, 3], strides: [2, 2], pads: [1, 1, 1, 1] });
  const outs: Value[] = [];
  for (let layer = 1; layer <= 4; layer++) {
    const blocks = new Set(src.names().flatMap((n) => (n.startsWith(`body.layer${layer}.`) ? [n.split('.')[2]] : []))).size;
    for (let i = 0; i < blocks; i++) {
      const p = `body.layer${layer}.${i}`;
      const stride = i === 0 && layer > 1 ? 2 : 1;
      let y = b.op('Relu', [bn(c, conv(x, `${p}.conv1`, 1), `${p}.bn1`)]);
      y = b.op('Relu', [bn(c, conv(y, `${p}.conv2`, stride), `${p}.bn2`)]);
      y = bn(c, conv(y, `${p}.conv3`, 1), `${p}.bn3`);
      const identity = src.names().includes(`${p}.downsample.0.weight`) ? bn(c, conv(x, `${p}.downsample.0`, stride), `${p}.downsample.1`) : x;
      x = b.op('Relu', [b.add(y, identity)]);
    }
    if (layer >= 2) outs.push(x);
  }
  return outs;
}

function nearestTo(c: Ctx, x: Value, like: Value): Value {
  return c.b.op('Resize', [x, null, null, c.b.shapeOf(like)], { mode: 'nearest', coordinate_transformation_mode: 'asymmetric', nearest_mode: 'floor' });
}

function ssh(c: Ctx, x: Value, name: string, leaky: number): Value {
  const c3 = convBn(c, x, `${name}.conv3X3`, 1);
  const c5a = act(c, convBn(c, x, `${name}.conv5X5_1`, 1), leaky);
  const c5 = convBn(c, c5a, `${name}.conv5X5_2`, 1);
  const c7a = act(c, convBn(c, c5a, `${name}.conv7X7_2`, 1), leaky);
  const c7 = convBn(c, c7a, `${name}.conv7x7_3`, 1);
  return c.b.op('Relu', [c.b.concat([c3, c5, c7], 1)]);
}

function head(c: Ctx, features: Value[], name: string, k: number): Value {
  const parts = features.map((f, i) => {
    const y = c.b.conv(f, c.src.get(`${name}.${i}.conv1x1.weight`), c.src.get(`${name}.${i}.conv1x1.bias`), `${name}.${i}.conv1x1`);
    return c.b.reshape(c.b.transpose(y, [0, 2, 3, 1]), [1, -1, k]);
  });
  return c.b.concat(parts, 1);
}

/** Input `image` [1, 3, H, W]: BGR pixel values 0..255 (the mean is subtracted here); outputs `loc`, `conf`, `landms`. */
export function buildRetinaFace(b: GraphBuilder, source: TensorSource): void {
  const names = source.names();
  // Released files may carry DataParallel's `module.` prefix (facexlib strips it).
  const src: TensorSource = names.every((n) => n.startsWith('module.'))
    ? { names: () => names.map((n) => n.slice(7)), shape: (n) => source.shape(`module.${n}`), get: (n) => source.get(`module.${n}`) }
    : source;
  const keys = new Set(src.names());
  const resnet = keys.has('body.conv1.weight');
  if (!resnet && !keys.has('body.stage1.0.0.weight'))
    throw new FaceNetFormatError('not a RetinaFace detector: neither body.conv1 (ResNet-50) nor body.stage1 (MobileNet) weights');
  if (!keys.has('fpn.output1.0.weight')) throw new FaceNetFormatError('not a RetinaFace detector: fpn.output1.0.weight is missing');
  const c: Ctx = { b, src };
  const input = b.input('image', [1, 3, 'height', 'width']);
  const x = b.sub(input, b.constFloat(MEAN_BGR, [1, 3, 1, 1]));
  const [s1, s2, s3] = (resnet ? resNet50(c, x) : mobileNet(c, x)) as [Value, Value, Value];
  const outChannels = src.shape('fpn.output1.0.weight')[0]!;
  const leaky = outChannels <= 64 ? 0.1 : 0;
  const o1 = act(c, convBn(c, s1, 'fpn.output1', 1), leaky);
  let o2 = act(c, convBn(c, s2, 'fpn.output2', 1), leaky);
  const o3 = act(c, convBn(c, s3, 'fpn.output3', 1), leaky);
  o2 = act(c, convBn(c, b.add(o2, nearestTo(c, o3, o2)), 'fpn.merge2', 1), leaky);
  const m1 = act(c, convBn(c, b.add(o1, nearestTo(c, o2, o1)), 'fpn.merge1', 1), leaky);
  const features = [ssh(c, m1, 'ssh1', leaky), ssh(c, o2, 'ssh2', leaky), ssh(c, o3, 'ssh3', leaky)];
  b.output(head(c, features, 'BboxHead', 4), 'loc', [1, 'anchors', 4]);
  b.output(b.softmax(head(c, features, 'ClassHead', 2), -1), 'conf', [1, 'anchors', 2]);
  b.output(head(c, features, 'LandmarkHead', 10), 'landms', [1, 'anchors', 10]);
}
