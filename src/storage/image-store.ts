// Where result images and uploaded inputs live. The queue, the executor and the server use only this
// interface; the local folder (local.ts) is one implementation, an object store (S3) would be another file.
// Names are flat (no folders) and often come from clients, so every store accepts exactly the same names.

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

/** Throws StorageNameError unless `name` is one every store accepts (no separators, no "..", short). */
export function checkName(name: string): void {
  if (!isSafeName(name)) throw new StorageNameError(name);
}

export interface ImageStore {
  /** Stores bytes under `name`, replacing what was there; readers never see a partly written file. */
  write(name: string, data: Uint8Array): Promise<void>;
  /** The bytes, or undefined when nothing is stored under `name`. */
  read(name: string): Promise<Buffer | undefined>;
  exists(name: string): Promise<boolean>;
  /** Removes `name`; removing a missing name is not an error. */
  remove(name: string): Promise<void>;
}
