// --precision / --precision-models: parsed from flags, env and file; bf16 and unknown values refused naming the option.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadConfig } from '../../src/server/config.ts';

const base = { flags: { 'data-dir': '/tmp/kiln-cfg' }, env: {} };

test('precision defaults to fp32; int8 from flag, env or file; models as a list', () => {
  assert.equal(loadConfig(base).precision, 'fp32');
  assert.deepEqual(loadConfig(base).precisionModels, []);
  assert.equal(loadConfig({ ...base, flags: { ...base.flags, precision: 'int8' } }).precision, 'int8');
  assert.equal(loadConfig({ ...base, env: { KILN_PRECISION: 'int8' } }).precision, 'int8');
  assert.equal(loadConfig({ ...base, file: { precision: 'int8', precisionModels: ['a', 'b.safetensors'] } }).precision, 'int8');
  assert.deepEqual(loadConfig({ ...base, flags: { ...base.flags, 'precision-models': 'a,b' } }).precisionModels, ['a', 'b']);
});

test('bf16 and unknown precisions are refused, naming the option and the choices', () => {
  assert.throws(() => loadConfig({ ...base, flags: { ...base.flags, precision: 'bf16' } }), /precision.*(fp32|int8)/);
  assert.throws(() => loadConfig({ ...base, env: { KILN_PRECISION: 'int4' } }), /KILN_PRECISION|precision/);
});
