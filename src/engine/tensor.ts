// A dense float32 tensor on the host: the one currency between weights, samplers and ONNX sessions.
export interface Tensor {
  shape: number[];
  data: Float32Array;
}

export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

export function tensor(shape: number[], data?: Float32Array): Tensor {
  const n = numel(shape);
  if (data && data.length !== n) throw new Error(`tensor data has ${data.length} values, shape [${shape}] needs ${n}`);
  return { shape, data: data ?? new Float32Array(n) };
}
