// Worker entry: Node 20 workers do not run `--import tsx`, so TypeScript support is registered here
// (a no-op cost when the parent was started differently) before loading the real worker module.
import { register } from 'tsx/esm/api';

register();
await import('./engine-worker.ts');
