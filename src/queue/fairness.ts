// The order queued jobs run in, the same on every backend (SQLite orders by columns, Redis by BullMQ priority):
// 1. higher `priority` first (JobSpec.priority, an integer from PRIORITY_MIN to PRIORITY_MAX, default 0);
// 2. within one priority, by `turn`: round-robin across owners (API keys), so one key's 100 queued jobs do not
//    starve another key's single job;
// 3. then by the order the jobs entered the queue (`ticket`: at submit, retry, or when handed back by a worker).
// A job's turn is fixed when it is queued (submit or retry): one after the later of its owner's last queued turn at
// that priority and the turn now at the head of that priority's line. So a key that queues 100 jobs takes turns
// 1..100, and a key arriving while turn 51 is at the head gets 51, 52, ... — the two alternate from there.
// Turns are read from queued jobs only, so they start again from 1 whenever a priority's line empties.
import type { Job } from './job.ts';

export const PRIORITY_MIN = -10;
export const PRIORITY_MAX = 10;
export const PRIORITY_DEFAULT = 0;

/**
 * Turns a priority can hold. BullMQ priorities go up to 2^21 - 1 (2,097,151), and one number carries priority
 * and turn (see dispatchRank): 21 priority levels x this many turns fit. A line that never empties for this many
 * jobs at one priority keeps its latest jobs at the last turn, in submission order (fair again once it empties).
 */
export const TURNS_PER_PRIORITY = Math.floor(2_097_151 / (PRIORITY_MAX - PRIORITY_MIN + 1));
export const MAX_TURN = TURNS_PER_PRIORITY - 1;

/** A job's priority (its spec's; absent is the default). */
export function priorityOf(spec: { priority?: number }): number {
  return spec.priority ?? PRIORITY_DEFAULT;
}

/**
 * The turn of a job queued now. `headTurn`: the lowest turn queued at its priority (undefined when none);
 * `ownerLastTurn`: the highest turn its owner has queued at that priority (undefined when none).
 */
export function nextTurn(headTurn: number | undefined, ownerLastTurn: number | undefined): number {
  const head = headTurn === undefined ? 0 : headTurn - 1;
  return Math.min(MAX_TURN, Math.max(head, ownerLastTurn ?? 0) + 1);
}

/** Priority and turn as one number, lower runs first, from 1 (BullMQ's priority; 0 would mean "none"). */
export function dispatchRank(priority: number, turn: number): number {
  return (PRIORITY_MAX - priority) * TURNS_PER_PRIORITY + Math.min(Math.max(turn, 0), MAX_TURN) + 1;
}

/** The range of dispatchRank values one priority spans (for "lowest/highest turn at this priority"). */
export function rankRange(priority: number): [number, number] {
  return [dispatchRank(priority, 0), dispatchRank(priority, MAX_TURN)];
}

/** Whether queued job `a` runs before queued job `b`. */
export function runsBefore(a: Pick<Job, 'priority' | 'turn' | 'ticket'>, b: Pick<Job, 'priority' | 'turn' | 'ticket'>): boolean {
  if (a.priority !== b.priority) return a.priority > b.priority;
  if (a.turn !== b.turn) return a.turn < b.turn;
  return a.ticket < b.ticket;
}
