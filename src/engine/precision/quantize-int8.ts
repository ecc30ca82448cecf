// Symmetric per-output-channel int8 quantisation of a weight matrix: each row (output channel) gets its own scale
// max|w|/127 and zero point 0, so q = round(w / scale) in [-127, 127]. Small and dependency-free so that other
// weight-quantising code can share it.

export interface Int8Rows {
  /** Quantised values, row-major like the input. */
  q: Int8Array;
  /** One scale per row; w ≈ q * scale. */
  scales: Float32Array;
}

/** Quantises `rows` x `cols` values (row-major) with one scale per row. A row of zeros gets scale 1. */
export function quantizeRowsInt8(data: Float32Array, rows: number, cols: number): Int8Rows {
  if (data.length !== rows * cols) throw new Error(`quantizeRowsInt8: ${data.length} values are not ${rows} x ${cols}`);
  const q = new Int8Array(rows * cols);
  const scales = new Float32Array(rows);
  for (let r = 0; r < rows; r++) {
    const base = r * cols;
    let max = 0;
    for (let c = 0; c < cols; c++) max = Math.max(max, Math.abs(data[base + c]!));
    const scale = max > 0 ? max / 127 : 1;
    scales[r] = scale;
    for (let c = 0; c < cols; c++) q[base + c] = Math.round(data[base + c]! / scale);
  }
  return { q, scales };
}

/** uint8 asymmetric quantisation parameters covering [min, max] (which is widened to include 0, as ONNX requires). */
export function uint8Range(min: number, max: number): { scale: number; zeroPoint: number } {
  const lo = Math.min(0, min);
  const hi = Math.max(0, max);
  const scale = hi > lo ? (hi - lo) / 255 : 1;
  const zeroPoint = Math.min(255, Math.max(0, Math.round(-lo / scale)));
  return { scale, zeroPoint };
}
