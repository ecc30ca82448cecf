// Kiln's native API as the playground uses it. Every URL is relative to the page, so the page works behind a
// reverse proxy at a sub-path; the API key (when the server has keys) comes from localStorage and goes in the
// X-API-Key header, which is why images, previews and events are fetched rather than linked (an <img src> or an
// EventSource cannot send a header).

const KEY_STORAGE = 'kiln.apiKey';

export const apiKey = {
  get: () => localStorage.getItem(KEY_STORAGE) ?? '',
  set: (key) => (key ? localStorage.setItem(KEY_STORAGE, key) : localStorage.removeItem(KEY_STORAGE)),
};

/** A path of the API ("v1/jobs") resolved against the page, never against the site root. */
export const apiUrl = (path) => new URL(path.replace(/^\//, ''), document.baseURI).href;

export class ApiError extends Error {
  constructor(status, message, field) {
    super(message);
    this.status = status;
    this.field = field;
  }
}

function headers(extra = {}) {
  const key = apiKey.get();
  return key ? { ...extra, 'x-api-key': key } : extra;
}

async function failure(res) {
  let message = `${res.status} ${res.statusText}`;
  let field;
  try {
    const body = await res.json();
    message = body.error?.message ?? body.detail ?? message;
    field = body.error?.field;
  } catch {
    /* not JSON: keep the status line */
  }
  // Any 401 means the key is missing or wrong: the page asks for one.
  if (res.status === 401) dispatchEvent(new CustomEvent('kiln:unauthorized', { detail: message }));
  return new ApiError(res.status, message, field);
}

/** JSON request; throws ApiError with the server's message and field. */
export async function api(path, { method = 'GET', body, signal } = {}) {
  const res = await fetch(apiUrl(path), {
    method,
    signal,
    headers: headers(body === undefined ? {} : { 'content-type': 'application/json' }),
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!res.ok) throw await failure(res);
  return res.json();
}

export async function fetchBlob(path, signal) {
  const res = await fetch(apiUrl(path), { headers: headers(), signal, cache: 'no-store' });
  if (!res.ok) throw await failure(res);
  return res.blob();
}

/** Server-Sent Events read over fetch (so the key header goes along): yields {event, data} until the stream ends. */
export async function* serverEvents(path, signal) {
  const res = await fetch(apiUrl(path), { headers: headers({ accept: 'text/event-stream' }), signal });
  if (!res.ok) throw await failure(res);
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replace(/\r\n/g, '\n');
    for (let end = buffer.indexOf('\n\n'); end >= 0; end = buffer.indexOf('\n\n')) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let event = 'message';
      const data = [];
      for (const line of block.split('\n')) {
        if (line.startsWith('event:')) event = line.slice(6).trim();
        else if (line.startsWith('data:')) data.push(line.slice(5).trimStart());
      }
      if (data.length) yield { event, data: JSON.parse(data.join('\n')) };
    }
  }
}

export const blobToDataUrl = (blob) =>
  new Promise((resolve, reject) => {
    const r = new FileReader();
    r.onload = () => resolve(r.result);
    r.onerror = () => reject(r.error);
    r.readAsDataURL(blob);
  });
