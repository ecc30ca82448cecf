// The routing policy of this process on a shared queue (queue/routing.ts), from its model registry: a job's route
// is the canonical name of the checkpoint it needs (the request's model, or this node's default), or any worker
// when it needs none; a worker serves the routes of the checkpoints it has, or only its --model when a
// `kiln worker` was started with one, and looks first at the models its engine has loaded.
import type { JobSpec } from '../queue/job-spec.ts';
import { ANY_ROUTE, type JobRouting } from '../queue/routing.ts';
import type { ModelRegistry } from './models/registry.ts';

export interface ModelRouting extends JobRouting {
  /** The models this worker runs jobs for (announced in its heartbeat). */
  servedModels(): string[];
}

/** `only`: the one model this worker serves (kiln worker --model); absent: every checkpoint it has. */
export function modelRouting(models: () => ModelRegistry, loaded: () => string[], only?: () => string | undefined): ModelRouting {
  const restricted = () => (only ? only() : undefined);
  return {
    routeOf(spec: JobSpec) {
      if (spec.kind === 'upscale') return ANY_ROUTE;
      const needsCheckpoint = spec.kind === 'embed-image' ? spec.vision?.vae !== false : spec.kind === 'interrogate' ? spec.model !== undefined : true;
      if (!needsCheckpoint) return ANY_ROUTE;
      return models().lookup(spec.model)?.name ?? ANY_ROUTE;
    },
    serves(route: string) {
      if (route === ANY_ROUTE) return true;
      const own = restricted();
      if (own !== undefined) return own === route;
      return models().lookup(route)?.name === route;
    },
    preferred: () => loaded(),
    servedModels() {
      const own = restricted();
      return own !== undefined
        ? [own]
        : models()
            .list()
            .map((e) => e.name);
    },
  };
}
