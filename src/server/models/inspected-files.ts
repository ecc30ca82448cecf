// Model files of one kind, each inspected once (by path, size and mtime) so listings and 400s can say which files
// the engine can read and why the others are left out. Upscalers and CLIP models use it; errors name files by
// their path relative to the models folder, never the server's absolute path.
import { statSync, type Stats } from 'node:fs';
import { relative } from 'node:path';
import type { ModelEntry, ModelKind, ModelRegistry } from './registry.ts';

export type Inspected<T> = { ok: true; file: T } | { ok: false; name: string; reason: string };

export class InspectedFiles<T> {
  private readonly cache = new Map<string, Inspected<T>>();

  constructor(
    private readonly models: ModelRegistry,
    private readonly modelsDir: string,
    private readonly kind: ModelKind,
    /** Reads what the catalog needs from a file; throws to leave it out, with the reason. */
    private readonly inspect: (entry: ModelEntry, relativePath: string) => T,
    /** A reason to refuse a file from its stat alone (before opening it), or undefined. */
    private readonly precheck: (st: Stats) => string | undefined = () => undefined,
  ) {}

  all(): Inspected<T>[] {
    return this.models.list(this.kind).map((e) => {
      let key: string;
      try {
        const st = statSync(e.path);
        const refused = this.precheck(st);
        if (refused) return { ok: false, name: e.name, reason: refused };
        key = `${e.path}\0${st.size}\0${st.mtimeMs}`;
      } catch (err) {
        return { ok: false, name: e.name, reason: (err as Error).message };
      }
      let hit = this.cache.get(key);
      if (!hit) {
        const rel = relative(this.modelsDir, e.path);
        try {
          hit = { ok: true, file: this.inspect(e, rel) };
        } catch (err) {
          hit = { ok: false, name: e.name, reason: (err as Error).message.replace(e.path, rel) };
        }
        this.cache.set(key, hit);
      }
      return hit;
    });
  }

  /** The files the engine can read. */
  readable(): T[] {
    return this.all().flatMap((i) => (i.ok ? [i.file] : []));
  }
}
