#!/usr/bin/env node
// Entry point for the `kiln` command: runs the TypeScript CLI through tsx.
import { register } from 'tsx/esm/api';
register();
await import('../src/cli/main.ts');
