// The local-folder ImageStore: results and uploaded inputs as files in one folder. Every name is checked
// against the shared pattern and resolved inside the folder, so nothing can be read or written outside it.
import { mkdirSync } from 'node:fs';
import { open, readFile, rm, rename, stat } from 'node:fs/promises';
import { join, resolve, sep } from 'node:path';
import { checkName, StorageNameError } from './image-store.ts';
import type { ImageStore } from './image-store.ts';

export class LocalImageStore implements ImageStore {
  readonly dir: string;

  constructor(dir: string) {
    this.dir = resolve(dir);
    mkdirSync(this.dir, { recursive: true });
  }

  /** The absolute path of a stored name; throws StorageNameError for anything that could leave the folder. */
  private pathOf(name: string): string {
    checkName(name);
    const p = join(this.dir, name);
    if (!p.startsWith(this.dir + sep)) throw new StorageNameError(name);
    return p;
  }

  /**
   * Writes atomically and durably: temp file, fsync, rename, fsync of the folder. When this resolves the image
   * survives a power cut (the job is marked done only after it), and a crash never leaves a half-written image
   * under the real name. A failed write (ENOSPC, ...) removes its temp file, so a full disk is not made fuller.
   */
  async write(name: string, data: Uint8Array): Promise<void> {
    const p = this.pathOf(name);
    const tmp = `${p}.${process.pid}.tmp`;
    try {
      const file = await open(tmp, 'w');
      try {
        await file.writeFile(data);
        await file.sync();
      } finally {
        await file.close();
      }
      await rename(tmp, p);
    } catch (e) {
      await rm(tmp, { force: true }).catch(() => undefined);
      throw e;
    }
    await this.syncFolder();
  }

  /** Makes the folder's entries (a rename) durable; the file's own fsync does not cover its name. */
  private async syncFolder(): Promise<void> {
    const dir = await open(this.dir, 'r');
    try {
      await dir.sync();
    } finally {
      await dir.close();
    }
  }

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
