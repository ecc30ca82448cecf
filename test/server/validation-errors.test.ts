// The shared reading of ajv's schema errors: the field path every surface names, and FastAPI's 422 detail in
// the wording of pydantic 2 (the seed APIs) and pydantic 1 (A1111).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Ajv } from 'ajv';
import type { ErrorObject } from 'ajv';
import { ajvPath } from '../../src/server/validation-errors.ts';
import { fastApiIssues } from '../../src/server/compat/fastapi.ts';

const schema = {
  type: 'object',
  required: ['prompt'],
  additionalProperties: false,
  properties: {
    prompt: { type: 'string' },
    steps: { type: 'integer', maximum: 150 },
    output: { type: 'object', properties: { format: { enum: ['png', 'jpeg'] } } },
    prompts: { type: 'array', items: { type: 'number' } },
  },
};
const validate = new Ajv({ allErrors: false, strict: false }).compile(schema);

function firstError(data: unknown): ErrorObject {
  assert.equal(validate(data), false);
  return validate.errors![0]!;
}

test('ajvPath: nested and indexed paths, plus the field a required / additionalProperties error names', () => {
  assert.deepEqual(ajvPath(firstError({})), ['prompt']);
  assert.deepEqual(ajvPath(firstError({ prompt: 'a', extra: 1 })), ['extra']);
  assert.deepEqual(ajvPath(firstError({ prompt: 'a', output: { format: 'gif' } })), ['output', 'format']);
  assert.deepEqual(ajvPath(firstError({ prompt: 'a', prompts: [1, 'x'] })), ['prompts', '1']);
  assert.deepEqual(ajvPath(firstError({ prompt: 'a', steps: 1.5 })), ['steps']);
});

test('fastApiIssues: pydantic 2 wording by default (the seed APIs)', () => {
  assert.deepEqual(fastApiIssues([firstError({})], 'body'), [{ loc: ['body', 'prompt'], msg: 'Field required', type: 'missing' }]);
  assert.deepEqual(fastApiIssues([firstError({ prompt: 'a', steps: 'x' })], 'body'), [
    { loc: ['body', 'steps'], msg: 'Input should be a valid integer', type: 'integer_type' },
  ]);
  assert.deepEqual(fastApiIssues([firstError({ prompt: 'a', steps: 151 })], 'body'), [
    { loc: ['body', 'steps'], msg: 'Input should be less than or equal to 150', type: 'less_than_equal' },
  ]);
  assert.deepEqual(fastApiIssues([firstError({ prompt: 'a', output: { format: 'gif' } })], 'body'), [
    { loc: ['body', 'output', 'format'], msg: "Input should be 'png' or 'jpeg'", type: 'enum' },
  ]);
  assert.deepEqual(fastApiIssues([firstError({ prompt: 'a', prompts: [1, 'x'] })], 'query'), [
    { loc: ['query', 'prompts', 1], msg: 'Input should be a valid number', type: 'number_type' },
  ]);
});

test('fastApiIssues: pydantic 1 wording (A1111)', () => {
  assert.deepEqual(fastApiIssues([firstError({})], 'body', 1), [{ loc: ['body', 'prompt'], msg: 'field required', type: 'value_error.missing' }]);
  assert.deepEqual(fastApiIssues([firstError({ prompt: 'a', steps: 'x' })], 'body', 1), [
    { loc: ['body', 'steps'], msg: 'value is not a valid integer', type: 'type_error.integer' },
  ]);
  assert.deepEqual(fastApiIssues([firstError({ prompt: 'a', prompts: [1, 'x'] })], 'body', 1), [
    { loc: ['body', 'prompts', 1], msg: 'value is not a valid float', type: 'type_error.float' },
  ]);
  assert.deepEqual(fastApiIssues([firstError({ prompt: 'a', steps: 151 })], 'body', 1), [
    { loc: ['body', 'steps'], msg: 'must be <= 150', type: 'value_error.maximum' },
  ]);
});
