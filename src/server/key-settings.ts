// Settings per API key, in memory for the server's life, in two layers: admins (and the single user of a server
// without keys) set the shared layer, server-wide state such as the checkpoint A1111 requests use; each user key
// sets its own overlay, seen and used by that key only. Bounded: one overlay per key name, and key names come
// from the configured keys. Values are checked by whoever stores them (A1111: compat/a1111-options.ts).
import type { Principal } from './auth.ts';
import { seesAllJobs } from './auth.ts';

/** A layer of settings: option values and the chosen checkpoint (a registry name). */
export interface SettingsLayer {
  options: Record<string, unknown>;
  model?: string;
}

/** Settings per principal: a shared layer (admins) under one overlay per user key. */
export class KeySettings {
  private readonly shared: SettingsLayer = { options: {} };
  private readonly perKey = new Map<string, SettingsLayer>();

  /** At most this many user overlays (names come from the configured keys, so this is a backstop). */
  constructor(private readonly maxKeys = 10_000) {}

  /** The layer a principal writes: admins and the keyless single user write the shared one. */
  private writable(p: Principal): SettingsLayer {
    if (seesAllJobs(p)) return this.shared;
    let layer = this.perKey.get(p.name);
    if (!layer) {
      if (this.perKey.size >= this.maxKeys) this.perKey.delete(this.perKey.keys().next().value!);
      layer = { options: {} };
      this.perKey.set(p.name, layer);
    }
    return layer;
  }

  /** What a principal's requests run under: its own settings over the shared ones. */
  effective(p: Principal): SettingsLayer {
    const own = seesAllJobs(p) ? undefined : this.perKey.get(p.name);
    return { options: { ...this.shared.options, ...own?.options }, model: own?.model ?? this.shared.model };
  }

  /** Stores checked values (and a resolved checkpoint name) for `p`. */
  set(p: Principal, values: Record<string, unknown>, model?: string): void {
    const layer = this.writable(p);
    Object.assign(layer.options, values);
    if (model !== undefined) layer.model = model;
  }
}
