// The server's options (the OPTIONS table in src/server/config.ts) as commander options, so `kiln serve`,
// `kiln models`, `kiln pull` and `kiln cache` share one parser and one help text, and back into the flag record
// loadConfig reads (flags > KILN_* env > config file > defaults; defaults are loadConfig's, not commander's).
import { type Command, Option } from 'commander';
import { OPTIONS } from '../server/config.ts';

export type Flags = Record<string, string | boolean | string[]>;

const collect = (value: string, previous: string[] | undefined) => [...(previous ?? []), value];

/** --api-key, --admin-key and --config are not rows of the table (keys collect, the file chooses the table). */
const EXTRA = [
  new Option('--api-key <key>', 'User API key; "name=key" names it (the name owns its jobs). Repeatable. [env KILN_API_KEYS, comma list]').argParser(collect),
  new Option('--admin-key <key>', 'Admin API key (model management). Repeatable. [env KILN_ADMIN_KEYS]').argParser(collect),
  new Option('--config <file>', 'Config file (default: kiln.config.json/.yaml in the data dir). [env KILN_CONFIG]'),
];

function describe(o: (typeof OPTIONS)[number]): string {
  const def =
    o.default === undefined || (Array.isArray(o.default) && o.default.length === 0)
      ? ''
      : ` (default ${o.scale ? Number(o.default) / o.scale : String(o.default)})`;
  return `${o.doc}${def} [env ${o.env}]`;
}

/** Adds every server option (or only `only`, by flag name) to a command. */
export function addServerOptions(cmd: Command, only?: string[]): Command {
  for (const o of OPTIONS) {
    if (only && !only.includes(o.flag)) continue;
    const opt =
      o.kind === 'bool'
        ? new Option(`--${o.flag} [true|false]`, describe(o))
        : o.kind === 'list'
          ? new Option(`--${o.flag} <list>`, describe(o)).argParser(collect)
          : new Option(`--${o.flag} <value>`, describe(o));
    if (typeof o.kind === 'object') opt.choices(o.kind.oneOf);
    cmd.addOption(opt);
  }
  for (const e of EXTRA) if (!only || only.includes(e.long!.slice(2))) cmd.addOption(e);
  return cmd;
}

/** The parsed options back as loadConfig's flag record, keyed by flag name. */
export function flagsOf(cmd: Command): Flags {
  const flags: Flags = {};
  for (const opt of cmd.options) {
    const name = opt.long?.slice(2);
    if (!name) continue;
    const value = cmd.getOptionValue(opt.attributeName()) as string | boolean | string[] | undefined;
    if ((value !== undefined && OPTIONS.some((o) => o.flag === name)) || (value !== undefined && ['api-key', 'admin-key', 'config'].includes(name)))
      flags[name] = value as string | boolean | string[];
  }
  return flags;
}
