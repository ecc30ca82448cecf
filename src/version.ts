// Kiln's version, from package.json (the single source), for /health, infotexts and compat APIs.
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
export const VERSION: string = (require('../package.json') as { version: string }).version;
