// This browser's results in IndexedDB: one record per image (the image bytes, its job, seed and infotext), the
// newest MAX_IMAGES kept. The server keeps its own copy; deleting here forgets the image in this browser only.

const DB = 'kiln-playground';
const STORE = 'images';
export const MAX_IMAGES = 200;

let opened;
function db() {
  opened ??= new Promise((resolve, reject) => {
    const req = indexedDB.open(DB, 1);
    req.onupgradeneeded = () => req.result.createObjectStore(STORE, { keyPath: 'name' }).createIndex('createdAt', 'createdAt');
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
  return opened;
}

function done(req) {
  return new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

async function store(mode) {
  return (await db()).transaction(STORE, mode).objectStore(STORE);
}

/** Every stored image, newest first. */
export async function listImages() {
  const all = await done((await store('readonly')).index('createdAt').getAll());
  return all.reverse();
}

export async function getImage(name) {
  return done((await store('readonly')).get(name));
}

/** Adds (or replaces) an image record, then drops the oldest beyond MAX_IMAGES. */
export async function putImage(record) {
  await done((await store('readwrite')).put(record));
  const all = await listImages();
  for (const old of all.slice(MAX_IMAGES)) await deleteImage(old.name);
}

export async function deleteImage(name) {
  await done((await store('readwrite')).delete(name));
}
