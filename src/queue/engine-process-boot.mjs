// Engine process entry: registers TypeScript support (the parent may have been started any way, and a bare
// `--import tsx` would resolve against the user's working directory) before loading the real child module.
import { register } from 'tsx/esm/api';

register();
await import('./engine-process-child.ts');
