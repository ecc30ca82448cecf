// Prompt helpers shared by the flow families: the text the encoders see and the CLIP / T5 runs they make.
import { CLIP_TEXT_IO, type ClipTextOptions } from '../nets/clip-text.ts';
import { T5_IO } from '../nets/t5.ts';
import { encodePromptIds, isBreak, parsePromptAttention } from '../prompt/index.ts';
import { runSession } from '../runtime.ts';
import type { Tensor } from '../tensor.ts';
import type { FlowTextEncoders } from './flow-types.ts';

/**
 * The prompt as plain text: A1111's attention syntax ("(word:1.2)", "[word]", BREAK) is parsed and its weights
 * dropped, so clients that send it get the words rather than literal brackets. Emphasis weights are not applied
 * to flow models (their T5 tokens are not chunked as CLIP's are).
 */
export function plainPromptText(prompt: string, field: string): string {
  return parsePromptAttention(prompt, field)
    .filter((p) => !isBreak(p))
    .map((p) => p.text)
    .join('')
    .replace(/\s+/g, ' ')
    .trim();
}

/** One CLIP encoder over the first 77 tokens (diffusers' padding="max_length", truncation=True). */
export async function runClip(encoders: FlowTextEncoders, index: number, text: string, opts: ClipTextOptions): Promise<Record<string, Tensor>> {
  const session = await encoders.textEncoder(index, opts);
  const ids = encodePromptIds(encoders.tokenizer(index), text);
  return runSession(session, { [CLIP_TEXT_IO.inputIds]: { int64: BigInt64Array.from(ids.map((i) => BigInt(i))), shape: [1, ids.length] } });
}

/** T5's last_hidden_state [1, t5Tokens, D] for the text padded to t5Tokens (no attention mask, as Flux and SD3 run it). */
export async function runT5(encoders: FlowTextEncoders, text: string): Promise<Tensor | undefined> {
  const session = encoders.t5Encoder();
  if (!session) return undefined;
  const { ids } = encoders.t5Tokenizer().encode(text, encoders.t5Tokens);
  const out = await runSession(await session, { [T5_IO.inputIds]: { int64: BigInt64Array.from(ids.map((i) => BigInt(i))), shape: [1, ids.length] } });
  const hidden = out[T5_IO.hidden];
  if (!hidden) throw new Error('the T5 encoder returned no last_hidden_state');
  return hidden;
}
