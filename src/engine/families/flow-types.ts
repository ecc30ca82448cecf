// What a rectified-flow transformer family (Flux.1, SD3) says beyond the common family fields: its transformer,
// where its T5 encoder and tokenizer live, how a prompt becomes (tokens, pooled vector), how the transformer is fed
// as a velocity, its flow schedule, and whether guidance is distilled (an input) or classifier-free (a batch).
import type { ClipTextOptions } from '../nets/clip-text.ts';
import type { ClipTokenizer } from '../prompt/index.ts';
import type { T5Tokenizer } from '../prompt/t5-tokenizer.ts';
import type { Feed, Session } from '../runtime.ts';
import type { FlowScheduleConfig, FlowSpacing, VelocityFn } from '../samplers/flow.ts';
import type { Tensor } from '../tensor.ts';

export type FlowTransformerKind = 'flux' | 'mmdit';

/** One prompt's conditioning for a flow transformer. */
export interface FlowConditioning {
  /** [1, T, D]: T5 tokens (Flux), or CLIP tokens then T5 tokens (SD3). */
  txt: Tensor;
  /** [1, P]: CLIP-L pooled (Flux), or CLIP-L and CLIP-G projections joined (SD3). */
  pooled: Tensor;
}

/** A loaded flow model's text encoders. */
export interface FlowTextEncoders {
  /** CLIP encoders, in the order of the family's textEncoders. */
  readonly textEncoderCount: number;
  tokenizer(index: number): ClipTokenizer;
  textEncoder(index: number, opts: ClipTextOptions): Promise<Session>;
  /** The transformer's text token width (SD3 pads CLIP features to it, and stands zeros in for a missing T5). */
  readonly contextDim: number;
  /** T5 tokens per prompt (padding="max_length"); the T5 graph and the transformer graph are built for it. */
  readonly t5Tokens: number;
  t5Tokenizer(): T5Tokenizer;
  /** The T5 encoder (input_ids [B, t5Tokens] -> last_hidden_state), or undefined when the model has none (SD3 without T5). */
  t5Encoder(): Promise<Session> | undefined;
}

/** The rows of one transformer batch and what stays fixed over the sampling run. */
export interface FlowRows {
  /** [B, T, D] */
  txt: Tensor;
  /** [B, P] */
  pooled: Tensor;
  /** Distilled guidance (Flux dev) for every row; undefined when the transformer takes none. */
  guidance?: number;
  /** Latent height and width (pixels / 8). */
  height: number;
  width: number;
}

export interface FlowConventions {
  transformer: FlowTransformerKind;
  /** The T5 encoder's diffusers component and tokenizer folder; `checkpointPrefixes`: where all-in-one files keep it. */
  t5: { component: 'text_encoder_2' | 'text_encoder_3'; tokenizerFolder: 'tokenizer_2' | 'tokenizer_3'; checkpointPrefixes: string[] };
  /** T5 tokens per prompt: the reference pipelines' max_sequence_length (Flux dev 512, schnell 256, SD3 256). */
  t5Tokens(hasGuidanceInput: boolean): number;
  /** The flow schedule when the model folder has no scheduler_config.json (schnell: no shift; dev: dynamic). */
  defaultSchedule(hasGuidanceInput: boolean): FlowScheduleConfig;
  /** Where the unshifted sigma grid comes from (samplers/flow.ts). */
  spacing: FlowSpacing;
  /** 'distilled': a guidance input, no negative batch (Flux dev; schnell has neither); 'cfg': classifier-free guidance. */
  guidance: 'distilled' | 'cfg';
  /** Default image side in pixels. */
  nativeSize: number;
  encode(encoders: FlowTextEncoders, prompt: string, field: string): Promise<FlowConditioning>;
  /** The transformer (run = one session call) as a velocity over unpacked latents [B, C, h, w]. */
  velocity(run: (feeds: Record<string, Feed>) => Promise<Record<string, Tensor>>, rows: FlowRows): VelocityFn;
}
