// The playground's entry: tabs, the API key, the server's catalog, and the wiring between the generate form, the
// job list, the gallery and PNG info. No framework: the page is a few hundred lines of DOM code.

import { ApiError, api, apiKey, blobToDataUrl } from './api.js';
import { GenerateForm } from './form.js';
import { highlightPrompt } from './emphasis.js';
import { deleteImage, getImage, listImages } from './gallery-store.js';
import { JobList } from './jobs.js';
import { MaskPainter } from './mask-painter.js';
import { infotextToForm, looksLikeInfotext, parseInfotext, readPngText } from './png-info.js';

const $ = (sel) => document.querySelector(sel);
const state = { lastSeed: undefined, initImage: undefined, capabilities: {}, pngForm: undefined };

// --- small helpers -------------------------------------------------------------------------------------------
let toastTimer;
function toast(message, kind = 'error') {
  const el = $('#toast');
  el.textContent = message;
  el.dataset.kind = kind;
  el.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => (el.hidden = true), 8000);
}

function showTab(name) {
  for (const b of document.querySelectorAll('[role=tab]')) b.setAttribute('aria-selected', String(b.dataset.tab === name));
  for (const t of document.querySelectorAll('.tab')) t.hidden = t.id !== `tab-${name}`;
  if (name === 'gallery') void renderGallery();
}

function viewImage(src) {
  const dialog = $('#viewer');
  dialog.querySelector('img').src = src;
  dialog.showModal();
}

// --- API key ---------------------------------------------------------------------------------------------------
function showKeyForm(message) {
  $('#key-form').hidden = false;
  $('#key-message').textContent = message ?? '';
  $('#api-key').focus();
}
addEventListener('kiln:unauthorized', (e) => showKeyForm(e.detail));
$('#key-toggle').addEventListener('click', () => {
  if ($('#key-form').hidden) showKeyForm();
  else $('#key-form').hidden = true;
});
$('#api-key').value = apiKey.get();
$('#key-form').addEventListener('submit', (e) => {
  e.preventDefault();
  apiKey.set($('#api-key').value.trim());
  $('#key-form').hidden = true;
  void loadCatalog();
});

// --- server catalog and status -----------------------------------------------------------------------------------
const form = new GenerateForm($('#gen-form'));

async function loadCatalog() {
  try {
    const capabilities = await api('v1/capabilities');
    const [models, samplers, schedules, loras] = await Promise.all([
      api('v1/models'),
      api('v1/samplers'),
      api('v1/schedules'),
      capabilities.features?.loras ? api('v1/models?kind=lora') : { models: [] },
    ]);
    state.capabilities = capabilities;
    form.setCatalog({ capabilities, models: models.models, samplers: samplers.samplers, schedules: schedules.schedules, loras: loras.models });
    fillUpscalers(capabilities.upscalers?.image ?? []);
    // The sampler lists come from the engine: while it is still starting they are empty, so ask again shortly.
    if (samplers.samplers.length === 0) setTimeout(loadCatalog, 3000);
    else document.body.dataset.ready = 'true';
  } catch (e) {
    if (!(e instanceof ApiError && e.status === 401)) toast(`Could not load the server's lists: ${e.message}`);
  }
}

function fillUpscalers(names) {
  const usable = names.filter((n) => n !== 'None');
  $('#upscaler').replaceChildren(...usable.map((n) => new Option(n, n)));
  $('#upscale-controls').hidden = usable.length === 0;
  document.body.classList.toggle('no-upscale', usable.length === 0);
}

async function refreshStatus() {
  try {
    const h = await api('health');
    $('#status').textContent = `${h.engine === 'ready' ? 'ready' : h.engine} · ${h.queue.running} running · ${h.queue.queued} queued`;
    $('#status').dataset.engine = h.engine;
  } catch {
    $('#status').textContent = 'offline';
    $('#status').dataset.engine = 'offline';
  }
}

// --- generate ----------------------------------------------------------------------------------------------------
const jobs = new JobList($('#jobs'), $('#job-template'), {
  toast,
  view: viewImage,
  onEmpty: (empty) => ($('#jobs-empty').hidden = !empty),
  onImages: (records) => {
    if (records[0]?.seed !== undefined) state.lastSeed = records[0].seed;
    void updateGalleryCount();
    void refreshStatus();
  },
});

const genForm = $('#gen-form');
highlightPrompt($('#prompt'));
highlightPrompt(genForm.elements.namedItem('negative_prompt'));
genForm.addEventListener('input', () => form.save());
genForm.addEventListener('change', (e) => {
  if (e.target.name === 'type') form.setMode(e.target.value);
  if (e.target.name === 'model') form.updatePresets();
  if (e.target.id === 'preset') form.applyPreset(e.target.value);
  if (e.target.name === 'hires_on') $('#hires-options').hidden = !e.target.checked;
  if (e.target.name === 'inpaint') $('#mask-canvas').hidden = !e.target.checked;
  form.save();
});

async function generate() {
  const button = $('#generate');
  for (const el of genForm.querySelectorAll('[aria-invalid]')) el.removeAttribute('aria-invalid');
  button.disabled = true;
  try {
    const inpaint = genForm.elements.namedItem('inpaint').checked && form.mode() === 'img2img' && painter.painted;
    const bodies = form.requests({ initImage: state.initImage, mask: inpaint ? painter.toDataUrl() : undefined });
    for (const body of bodies) {
      const job = await jobs.submit(body);
      if (job.seeds?.length) state.lastSeed = job.seeds[0];
    }
    void refreshStatus();
  } catch (e) {
    toast(e.message);
    const field = e.field && genForm.elements.namedItem(e.field.split('.')[0]);
    if (field?.setAttribute) {
      field.setAttribute('aria-invalid', 'true');
      field.focus();
    }
  } finally {
    button.disabled = false;
  }
}
genForm.addEventListener('submit', (e) => {
  e.preventDefault();
  void generate();
});
addEventListener('keydown', (e) => {
  if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) {
    e.preventDefault();
    showTab('generate');
    void generate();
  }
});

$('#seed-random').addEventListener('click', () => form.apply({ seed: -1 }));
$('#seed-reuse').addEventListener('click', () => {
  if (state.lastSeed === undefined) toast('No seed yet: generate an image first');
  else form.apply({ seed: state.lastSeed });
});
$('#lora-add').addEventListener('click', () => form.addLora($('#lora-pick').value));

// Pasting a whole A1111 infotext into the prompt box loads every field (Fooocus' "paste parameters").
$('#prompt').addEventListener('paste', (e) => {
  const text = e.clipboardData?.getData('text/plain') ?? '';
  if (!looksLikeInfotext(text)) return;
  e.preventDefault();
  form.apply(infotextToForm(parseInfotext(text)));
  toast('Loaded the pasted parameters into the form', 'info');
});

// --- img2img input and mask ----------------------------------------------------------------------------------------
const painter = new MaskPainter($('#mask-canvas'), $('#brush'));

async function setInitImage(blob) {
  if (!blob.type.startsWith('image/')) return toast('That is not an image');
  state.initImage = await blobToDataUrl(blob);
  const img = $('#init-preview');
  img.src = state.initImage;
  await img.decode();
  painter.reset(img.naturalWidth, img.naturalHeight);
  $('#mask-canvas').hidden = !genForm.elements.namedItem('inpaint').checked;
  $('#init-stage').hidden = false;
  form.setMode('img2img');
}
$('#init-file').addEventListener('change', (e) => e.target.files[0] && setInitImage(e.target.files[0]));
$('#mask-clear').addEventListener('click', () => painter.clear());
$('#init-remove').addEventListener('click', () => {
  state.initImage = undefined;
  $('#init-stage').hidden = true;
  form.setMode('txt2img');
});
dropZone($('#init-drop'), setInitImage);
addEventListener('paste', (e) => {
  const file = [...(e.clipboardData?.files ?? [])].find((f) => f.type.startsWith('image/'));
  if (file && !$('#tab-generate').hidden) void setInitImage(file);
});

function dropZone(el, onFile) {
  el.addEventListener('dragover', (e) => {
    e.preventDefault();
    el.classList.add('over');
  });
  el.addEventListener('dragleave', () => el.classList.remove('over'));
  el.addEventListener('drop', (e) => {
    e.preventDefault();
    el.classList.remove('over');
    const file = e.dataTransfer?.files?.[0];
    if (file) void onFile(file);
  });
  el.querySelector('button').addEventListener('click', () => el.querySelector('input[type=file]').click());
}

// --- gallery -----------------------------------------------------------------------------------------------------
let galleryUrls = [];

async function updateGalleryCount() {
  const n = (await listImages()).length;
  $('#gallery-count').textContent = n ? `(${n})` : '';
  if (!$('#tab-gallery').hidden) void renderGallery();
}

async function renderGallery() {
  for (const u of galleryUrls) URL.revokeObjectURL(u);
  galleryUrls = [];
  const records = await listImages();
  const template = $('#card-template');
  $('#gallery').replaceChildren(
    ...records.map((r) => {
      const li = template.content.firstElementChild.cloneNode(true);
      const url = URL.createObjectURL(r.blob);
      galleryUrls.push(url);
      li.dataset.name = r.name;
      li.dataset.jobId = r.jobId;
      const img = li.querySelector('img');
      img.src = url;
      img.alt = r.prompt;
      img.addEventListener('click', () => viewImage(url));
      li.querySelector('.card-prompt').textContent = r.prompt || '(empty prompt)';
      const q = r.request ?? {};
      const params =
        q.type === 'upscale'
          ? [`${r.width}×${r.height}`, 'upscaled']
          : [`${r.width}×${r.height}`, q.steps && `${q.steps} steps`, q.sampler, q.cfg_scale !== undefined && `CFG ${q.cfg_scale}`, `seed ${r.seed}`];
      li.querySelector('.card-params').textContent = params.filter(Boolean).join(' · ');
      li.querySelector('.card-params').title = r.infotext;
      return li;
    }),
  );
  $('#gallery-count').textContent = records.length ? `(${records.length})` : '';
}

$('#gallery').addEventListener('click', async (e) => {
  const act = e.target.dataset?.act;
  const card = e.target.closest('.card');
  if (!act || !card) return;
  const record = await getImage(card.dataset.name);
  if (!record) return;
  if (act === 'download') {
    const a = Object.assign(document.createElement('a'), { href: URL.createObjectURL(record.blob), download: record.name });
    a.click();
    setTimeout(() => URL.revokeObjectURL(a.href), 1000);
  } else if (act === 'img2img') {
    await setInitImage(record.blob);
    form.apply({ width: record.width, height: record.height });
    showTab('generate');
  } else if (act === 'params') {
    form.apply(infotextToForm(parseInfotext(record.infotext)));
    showTab('generate');
  } else if (act === 'copy') {
    try {
      await navigator.clipboard.writeText(record.infotext);
      toast('Infotext copied', 'info');
    } catch {
      toast('The browser refused the clipboard; the infotext is in the image tooltip');
    }
  } else if (act === 'upscale') {
    try {
      await jobs.submit(
        { image: await blobToDataUrl(record.blob), upscaler: $('#upscaler').value, scale: Number($('#upscale-scale').value) },
        { path: 'v1/upscale', title: record.prompt, kind: 'upscale' },
      );
      showTab('generate');
    } catch (err) {
      toast(err.message);
    }
  } else if (act === 'delete') {
    await deleteImage(record.name);
    await renderGallery();
  }
});

// --- PNG info ------------------------------------------------------------------------------------------------------
async function showPngInfo(file) {
  try {
    const chunks = await readPngText(await file.arrayBuffer());
    const text = chunks.parameters;
    $('#png-result').hidden = false;
    const img = $('#png-preview');
    URL.revokeObjectURL(img.src);
    img.src = URL.createObjectURL(file);
    $('#png-text').textContent = text ?? 'This PNG has no "parameters" text.';
    const dl = $('#png-params');
    dl.replaceChildren();
    state.pngForm = undefined;
    $('#png-load').disabled = !text;
    if (!text) return;
    const parsed = parseInfotext(text);
    state.pngForm = infotextToForm(parsed);
    for (const [k, v] of [['Prompt', parsed.prompt], ['Negative prompt', parsed.negativePrompt], ...Object.entries(parsed.params)]) {
      const dt = document.createElement('dt');
      dt.textContent = k;
      const dd = document.createElement('dd');
      dd.textContent = v;
      dl.append(dt, dd);
    }
  } catch (e) {
    toast(e.message);
  }
}
dropZone($('#png-drop'), showPngInfo);
$('#png-file').addEventListener('change', (e) => e.target.files[0] && showPngInfo(e.target.files[0]));
$('#png-load').addEventListener('click', () => {
  if (!state.pngForm) return;
  form.apply(state.pngForm);
  showTab('generate');
});

// --- start -------------------------------------------------------------------------------------------------------
for (const b of document.querySelectorAll('[role=tab]')) b.addEventListener('click', () => showTab(b.dataset.tab));
// A file dropped anywhere else on the page must not navigate away from it.
addEventListener('dragover', (e) => e.preventDefault());
addEventListener('drop', (e) => e.preventDefault());
$('#jobs-empty').hidden = $('#jobs').children.length > 0;
form.setMode('txt2img');
void loadCatalog();
void refreshStatus();
setInterval(refreshStatus, 5000);
void updateGalleryCount();
