// Model-aware routing on a shared queue: a job goes to a worker that has (or can load) its model. Each job gets a
// route where it is queued: the canonical name of the model it needs, or ANY_ROUTE when any worker will do (no
// checkpoint needed, or no model known to the API node). The Redis backend keeps one BullMQ queue per route
// (redis-routes.ts); a worker takes jobs only from the routes it serves (`kiln worker --model X`: only X; without
// it, every checkpoint in its models folder), looking first at the models it has loaded. A job whose model no live
// worker serves stays queued, and /health and GET /v1/workers say so (unserved_models).
import type { JobSpec } from './job-spec.ts';

/** The route of jobs any worker may run. */
export const ANY_ROUTE = '';

export interface JobRouting {
  /** The route of a job (where it is queued): a model name, or ANY_ROUTE. */
  routeOf(spec: JobSpec): string;
  /** Whether this process's worker runs jobs of a route (ANY_ROUTE: always). */
  serves(route: string): boolean;
  /** Routes this worker looks at first: the models it has loaded now. */
  preferred(): readonly string[];
}

/** Every how many claims a worker looks at its other routes first, so a loaded model cannot starve the rest. */
export const ROTATE_EVERY = 4;

/**
 * The order in which a worker looks at routes for its next job: the ones it serves, loaded models first, then any-
 * worker jobs, then the rest; every ROTATE_EVERY-th claim, the rest first.
 */
export function routeOrder(known: readonly string[], routing: JobRouting | undefined, claim: number): string[] {
  if (!routing) return [ANY_ROUTE];
  const served = [...new Set([ANY_ROUTE, ...known])].filter((r) => r === ANY_ROUTE || routing.serves(r));
  const loaded = new Set(routing.preferred());
  const first = served.filter((r) => loaded.has(r));
  const rest = served.filter((r) => !loaded.has(r) && r !== ANY_ROUTE).sort();
  const any = served.includes(ANY_ROUTE) && !loaded.has(ANY_ROUTE) ? [ANY_ROUTE] : [];
  return claim % ROTATE_EVERY === 0 ? [...rest, ...any, ...first] : [...first, ...any, ...rest];
}

/** The BullMQ queue of a route ('jobs' for ANY_ROUTE, as before routing; model names encoded to queue-name-safe text). */
export function bullQueueName(route: string): string {
  return route === ANY_ROUTE ? 'jobs' : `jobs-m-${Buffer.from(route).toString('base64url')}`;
}
