// Samplers, schedules and denoiser wrappers: the engine's sampling API.
export type { Denoiser, ModelFn, Prediction, TimestepMode, DenoiserOptions } from './denoiser.ts';
export { makeDenoiser } from './denoiser.ts';
export type { ModelSchedule, ModelScheduleConfig, BetaSchedule } from './model-schedule.ts';
export { createModelSchedule, scheduleFromAlphasCumprod, sigmaToT, tToSigma, tToSigmaLinear } from './model-schedule.ts';
export type { SamplerOptions, SamplerFn, SamplerContext, NoiseSource } from './types.ts';
export type { ScheduleId, ScheduleInfo, ScheduleOptions } from './schedules.ts';
export { SCHEDULES, buildSigmas, parseScheduleName } from './schedules.ts';
export type { SamplerId, SamplerInfo, ParsedSampler } from './names.ts';
export { SAMPLERS, getSampler, parseSamplerName, resolveSchedule, listSamplers, listSchedules } from './names.ts';
export type { Flavour, PlanRequest, SamplingPlan, RunOptions } from './run.ts';
export {
  planSampling,
  runSampler,
  countEvals,
  endAtSigmaMin,
  img2imgSigmasDiffusers,
  img2imgSigmasA1111,
  img2imgSigmas,
  addNoise,
  SamplingAbortedError,
} from './run.ts';
