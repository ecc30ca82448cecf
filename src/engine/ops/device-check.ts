// The `device-check` operation: proves the execution provider for a device starts, by building a one-op graph
// (x + 1) and running it with that device's providers. Run at server start for any device other than the CPU,
// so `--device cuda` without the CUDA provider (or without CUDA/cuDNN) fails the start with the reason, instead
// of a server that says it is ready while every job fails.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Device } from '../api.ts';
import { GraphBuilder } from '../onnx/graph.ts';
import { createSession, executionProviders, runSession } from '../runtime.ts';
import { tensor } from '../tensor.ts';
import type { EngineOp } from './types.ts';

export const deviceCheck: EngineOp<{ device: Device }, { device: Device; providers: string[] }> = {
  name: 'device-check',
  run: async ({ device }) => {
    const dir = mkdtempSync(join(tmpdir(), 'kiln-device-check-'));
    try {
      const b = new GraphBuilder('device-check', dir, 'fp32');
      const x = b.input('x', [1, 4]);
      b.output(b.add(x, b.constFloat(1)), 'y', [1, 4]);
      const path = b.finish();
      const session = await createSession(path, { device });
      try {
        const out = await runSession(session, { x: tensor([1, 4], new Float32Array([0, 1, 2, 3])) });
        const y = Object.values(out)[0];
        if (y?.data[3] !== 4) throw new Error(`the ${device} provider computed a wrong result`);
      } finally {
        await session.release();
      }
      return { device, providers: executionProviders(device) };
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  },
};
