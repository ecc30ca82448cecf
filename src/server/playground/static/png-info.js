// PNG info in the browser: the `parameters` text chunk of a PNG (Kiln's, A1111's, ComfyUI-free) and A1111's
// infotext format parsed into form fields.

const SIGNATURE = [137, 80, 78, 71, 13, 10, 26, 10];
const MAX_CHUNKS = 10_000;

async function inflate(bytes) {
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream('deflate'));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

/** Text chunks (tEXt, zTXt, iTXt) of a PNG as {keyword: text}; throws when the bytes are not a PNG. */
export async function readPngText(buffer) {
  const bytes = new Uint8Array(buffer);
  if (bytes.length < 8 || SIGNATURE.some((b, i) => bytes[i] !== b)) throw new Error('not a PNG file (the signature does not match)');
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const latin1 = new TextDecoder('latin1');
  const utf8 = new TextDecoder('utf-8');
  const out = {};
  let at = 8;
  for (let n = 0; n < MAX_CHUNKS && at + 12 <= bytes.length; n++) {
    const length = view.getUint32(at);
    const type = latin1.decode(bytes.subarray(at + 4, at + 8));
    const data = bytes.subarray(at + 8, Math.min(bytes.length, at + 8 + length));
    at += 12 + length;
    if (type === 'IEND') break;
    if (type !== 'tEXt' && type !== 'zTXt' && type !== 'iTXt') continue;
    const nul = data.indexOf(0);
    if (nul < 0) continue;
    const keyword = latin1.decode(data.subarray(0, nul));
    if (type === 'tEXt') out[keyword] = latin1.decode(data.subarray(nul + 1));
    else if (type === 'zTXt') out[keyword] = latin1.decode(await inflate(data.subarray(nul + 2)));
    else {
      // iTXt: keyword \0 compressed method language \0 translated keyword \0 text (UTF-8)
      const compressed = data[nul + 1] === 1;
      const langEnd = data.indexOf(0, nul + 3);
      const transEnd = data.indexOf(0, langEnd + 1);
      if (langEnd < 0 || transEnd < 0) continue;
      const text = data.subarray(transEnd + 1);
      out[keyword] = utf8.decode(compressed ? await inflate(text) : text);
    }
  }
  return out;
}

// A1111's parse_generation_parameters: the last line holds `key: value` pairs (quoted values are JSON strings).
const PARAM = /\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)/g;

/** A1111 infotext -> {prompt, negativePrompt, params}. The last line counts as parameters only with >= 3 pairs. */
export function parseInfotext(text) {
  const lines = text.trim().replace(/\r\n/g, '\n').split('\n');
  const params = {};
  const last = lines.at(-1) ?? '';
  const pairs = [...last.matchAll(PARAM)];
  if (pairs.length >= 3) {
    lines.pop();
    for (const [, key, raw] of pairs) {
      const value = raw.trim();
      try {
        params[key.trim()] = value.startsWith('"') ? JSON.parse(value) : value;
      } catch {
        params[key.trim()] = value;
      }
    }
  }
  const prompt = [];
  const negative = [];
  let inNegative = false;
  for (const line of lines) {
    if (line.startsWith('Negative prompt:')) {
      inNegative = true;
      negative.push(line.slice(16).trim());
    } else (inNegative ? negative : prompt).push(line);
  }
  return { prompt: prompt.join('\n').trim(), negativePrompt: negative.join('\n').trim(), params };
}

const number = (v) => (v === undefined || v === '' || Number.isNaN(Number(v)) ? undefined : Number(v));

/** Whether pasted text looks like a whole infotext (so pasting it into the prompt box loads every field). */
export const looksLikeInfotext = (text) => /\n(?:[^\n]*\n)*Steps: \d+,/.test(text) && Object.keys(parseInfotext(text).params).length >= 3;

/** Parsed infotext -> the playground's form fields (only those the text has). */
export function infotextToForm({ prompt, negativePrompt, params: p }) {
  const form = { prompt, negative_prompt: negativePrompt };
  const size = /^(\d+)x(\d+)$/.exec(p.Size ?? '');
  Object.assign(form, {
    steps: number(p.Steps),
    sampler: p.Sampler,
    schedule: p['Schedule type'],
    cfg_scale: number(p['CFG scale']),
    seed: number(p.Seed),
    width: size ? Number(size[1]) : undefined,
    height: size ? Number(size[2]) : undefined,
    model: p.Model,
    denoising_strength: number(p['Denoising strength']),
  });
  if (p['Hires upscale'] || p['Hires upscaler'] || p['Hires steps']) {
    form.hires = {
      scale: number(p['Hires upscale']),
      upscaler: p['Hires upscaler'],
      steps: number(p['Hires steps']),
      denoising_strength: number(p['Denoising strength']),
    };
    form.denoising_strength = undefined;
  }
  for (const k of Object.keys(form)) if (form[k] === undefined) delete form[k];
  return form;
}
