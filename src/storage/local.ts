// Stored files (results and uploaded inputs) in one folder. Names come from clients when they fetch images,
// so every name is checked against a strict pattern: no separators, no "..", nothing outside the folder.
import { mkdirSync } from 'node:fs';
import { readFile, rm, writeFile, rename, stat } from 'node:fs/promises';
import { join, resolve, sep } from 'node:path';

const SAFE_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$/;

export class StorageNameError extends Error {
  constructor(readonly fileName: string) {
    super(`invalid file name ${JSON.stringify(fileName.slice(0, 100))}: use letters, digits, '-', '_' and '.' only`);
    this.name = 'StorageNameError';
  }
}

export function isSafeName(name: string): boolean {
  return SAFE_NAME.test(name) && !name.includes('..');
}

export class LocalStorage {
  readonly dir: string;

  constructor(dir: string) {
    this.dir = resolve(dir);
    mkdirSync(this.dir, { recursive: true });
  }

  /** The absolute path of a stored name; throws StorageNameError for anything that could leave the folder. */
  pathOf(name: string): string {
    if (!isSafeName(name)) throw new StorageNameError(name);
    const p = join(this.dir, name);
    if (!p.startsWith(this.dir + sep)) throw new StorageNameError(name);
    return p;
  }

  /** Writes atomically (temp file + rename) so a crash never leaves a half-written image behind. */
  async write(name: string, data: Uint8Array): Promise<void> {
    const p = this.pathOf(name);
    const tmp = `${p}.${process.pid}.tmp`;
    await writeFile(tmp, data);
    await rename(tmp, p);
  }

  /** The file's bytes, or undefined when it does not exist. */
  async read(name: string): Promise<Buffer | undefined> {
    try {
      return await readFile(this.pathOf(name));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw e;
    }
  }

  async exists(name: string): Promise<boolean> {
    try {
      return (await stat(this.pathOf(name))).isFile();
    } catch {
      return false;
    }
  }

  async remove(name: string): Promise<void> {
    await rm(this.pathOf(name), { force: true });
  }
}
