// The generate form: its lists from the server (models, samplers, schedules, LoRAs, upscalers), size presets per
// model family, values kept in localStorage, the native request body it builds, and loading values back
// (from PNG info, a gallery image or pasted infotext).

const STORAGE = 'kiln.form';

// Sizes by model family (the server reports each checkpoint's family), then recipes for distilled models.
const SIZES = {
  sd1: ['512x512', '512x768', '768x512', '768x768', '64x64'],
  sd2: ['768x768', '512x512', '768x1024', '1024x768'],
  sdxl: ['1024x1024', '1152x896', '896x1152', '1216x832', '832x1216', '1344x768', '768x1344', '1536x640'],
};
SIZES['sdxl-refiner'] = SIZES.sdxl;
const RECIPES = {
  sdxl: [
    { label: 'SDXL-Lightning 4-step', sampler: 'Euler', schedule: 'Simple', steps: 4, cfg_scale: 1 },
    { label: 'SDXL Turbo', sampler: 'Euler a', schedule: 'Simple', steps: 1, cfg_scale: 0, width: 512, height: 512 },
  ],
};

const LORA_TAG = /<lora:([^:>]+)(?::([-\d.]+))?[^>]*>/gi;

export class GenerateForm {
  constructor(form) {
    this.form = form;
    this.el = (name) => form.elements.namedItem(name);
    this.models = [];
    this.loras = new Map(); // name -> weight
  }

  /** Fills the lists from the server's catalog and shows the optional parts the server has. */
  setCatalog({ capabilities, models, samplers, schedules, loras }) {
    const f = capabilities.features ?? {};
    this.models = models;
    fill(
      this.el('model'),
      models.map((m) => [m.name, `${m.label}${m.family ? ` (${m.family})` : ''}`]),
    );
    const def = models.find((m) => m.default);
    if (def) this.el('model').value = def.name;
    fill(
      this.el('sampler'),
      samplers.map((s) => [s.name, s.name]),
    );
    if (samplers.some((s) => s.name === 'Euler a')) this.el('sampler').value = 'Euler a';
    fill(
      this.el('schedule'),
      schedules.map((s) => [s.label ?? s.name, s.label ?? s.name]),
    );
    fill(
      this.form.querySelector('#lora-pick'),
      loras.map((l) => [l.name, l.label ?? l.name]),
    );
    fill(
      this.el('hires_upscaler'),
      (capabilities.upscalers?.hires ?? ['Latent']).map((u) => [u, u]),
    );
    this.form.querySelector('#loras').hidden = !f.loras || loras.length === 0;
    this.form.querySelector('#hires').hidden = !f.hires;
    this.form.querySelector('#mask-controls').hidden = !f.mask;
    // A transparency toggle appears as soon as the server reports the capability (LayerDiffuse).
    this.form.querySelector('#transparent-toggle').hidden = !f.transparentBackground;
    this.form.querySelector('#tiling-toggle').hidden = !f.tiling;
    const limits = capabilities.limits ?? {};
    if (limits.max_width) this.el('width').max = limits.max_width;
    if (limits.max_height) this.el('height').max = limits.max_height;
    if (limits.max_steps) this.el('steps').max = limits.max_steps;
    this.restore();
    this.updatePresets();
  }

  family() {
    return this.models.find((m) => m.name === this.el('model').value)?.family ?? 'sd1';
  }

  /** The preset list for the chosen model's family: sizes, then recipes. */
  updatePresets() {
    const family = this.family();
    const options = [['', 'Custom size']];
    for (const s of SIZES[family] ?? SIZES.sd1) options.push([`size:${s}`, s.replace('x', ' × ')]);
    (RECIPES[family] ?? []).forEach((r, i) => options.push([`recipe:${i}`, r.label]));
    fill(this.form.querySelector('#preset'), options);
  }

  applyPreset(value) {
    if (value.startsWith('size:')) {
      const [w, h] = value.slice(5).split('x');
      this.apply({ width: Number(w), height: Number(h) });
    } else if (value.startsWith('recipe:')) {
      const { label: _label, ...fields } = RECIPES[this.family()][Number(value.slice(7))];
      this.apply(fields);
    }
  }

  mode() {
    return this.form.querySelector('input[name=type]:checked').value;
  }

  setMode(mode) {
    this.form.querySelector(`input[name=type][value=${mode}]`).checked = true;
    this.form.querySelector('#img2img').hidden = mode !== 'img2img';
  }

  addLora(name, weight = 1) {
    if (!name) return;
    this.loras.set(name, weight);
    this.renderLoras();
  }

  renderLoras() {
    const list = this.form.querySelector('#lora-list');
    list.replaceChildren(
      ...[...this.loras].map(([name, weight]) => {
        const li = document.createElement('li');
        const label = document.createElement('span');
        label.textContent = name;
        const w = document.createElement('input');
        Object.assign(w, { type: 'number', step: '0.05', min: '-10', max: '10', value: String(weight), title: `${name} weight` });
        w.setAttribute('aria-label', `${name} weight`);
        w.addEventListener('input', () => {
          this.loras.set(name, Number(w.value));
          this.save();
        });
        const remove = document.createElement('button');
        Object.assign(remove, { type: 'button', textContent: '×', title: `Remove ${name}` });
        remove.addEventListener('click', () => {
          this.loras.delete(name);
          this.renderLoras();
        });
        li.append(label, w, remove);
        return li;
      }),
    );
    this.save();
  }

  /** Native request bodies: one per batch (batch count), seeds following on as A1111 numbers them. */
  requests({ initImage, mask }) {
    const v = (name) => this.el(name).value;
    const n = (name) => Number(v(name));
    const prompt = v('prompt');
    const perJob = n('images_per_prompt') || 1;
    const count = Math.max(1, n('batch_count') || 1);
    let seed = n('seed');
    // Several jobs with a random seed: pick it here so the batch numbers its images on from one seed.
    if (seed === -1 && count > 1) seed = crypto.getRandomValues(new Uint32Array(1))[0];
    const loras = new Map(this.loras);
    // `<lora:name:weight>` typed in the prompt counts too (the picker wins when both name one).
    for (const [, name, weight] of prompt.matchAll(LORA_TAG)) if (!loras.has(name)) loras.set(name, weight === undefined ? 1 : Number(weight));
    const body = {
      type: this.mode(),
      prompt,
      negative_prompt: v('negative_prompt'),
      model: v('model') || undefined,
      width: n('width'),
      height: n('height'),
      steps: n('steps'),
      cfg_scale: n('cfg_scale'),
      sampler: v('sampler') || undefined,
      schedule: v('schedule') || undefined,
      images_per_prompt: perJob,
      output: { response: 'url' },
    };
    if (loras.size) body.loras = [...loras].map(([name, weight]) => ({ name, weight }));
    if (this.el('hires_on').checked && !this.form.querySelector('#hires').hidden) {
      body.hires = { scale: n('hires_scale'), upscaler: v('hires_upscaler'), steps: n('hires_steps'), denoising_strength: n('hires_denoising') };
    }
    if (this.el('transparent_background').checked && !this.form.querySelector('#transparent-toggle').hidden) body.transparent_background = true;
    if (this.el('tiling').checked && !this.form.querySelector('#tiling-toggle').hidden) body.tiling = true;
    if (body.type === 'img2img') {
      if (!initImage) throw Object.assign(new Error('img2img needs an input image: drop one on the input image box'), { field: 'init_image' });
      body.init_image = initImage;
      body.denoising_strength = n('denoising_strength');
      if (mask) body.mask = { image: mask, blur: n('mask_blur'), invert: this.el('mask_invert').checked };
    }
    return Array.from({ length: count }, (_, i) => ({ ...body, seed: seed === -1 ? -1 : seed + i * perJob }));
  }

  /** Sets the fields a source has (infotext, gallery record, recipe); unknown select values are added. */
  apply(values) {
    const set = (name, value) => {
      const field = this.el(name);
      if (!field || value === undefined || value === null) return;
      if (field.type === 'checkbox') field.checked = Boolean(value);
      else {
        if (field.tagName === 'SELECT' && ![...field.options].some((o) => o.value === String(value))) field.add(new Option(String(value), String(value)));
        field.value = String(value);
      }
    };
    let { sampler, schedule } = values;
    // A1111's older infotext folds the schedule into the sampler name ("DPM++ 2M Karras").
    if (sampler && !schedule) {
      const known = [...this.el('schedule').options].map((o) => o.value);
      const tail = known.find((s) => s !== 'Automatic' && sampler.endsWith(` ${s}`));
      if (tail) [sampler, schedule] = [sampler.slice(0, -tail.length - 1), tail];
    }
    if (values.model) {
      const m = this.models.find((x) => x.name === values.model || x.label === values.model || x.labels?.includes(values.model));
      set('model', m ? m.name : values.model);
      this.updatePresets();
    }
    let prompt = values.prompt;
    if (prompt !== undefined) {
      // LoRA tags from an A1111 prompt go into the picker, the prompt keeps the rest.
      for (const [, name, weight] of prompt.matchAll(LORA_TAG)) this.loras.set(name, weight === undefined ? 1 : Number(weight));
      prompt = prompt.replace(LORA_TAG, '').replace(/ {2,}/g, ' ').trim();
      this.renderLoras();
    }
    for (const [k, v] of Object.entries({ ...values, prompt, sampler, schedule })) if (k !== 'model' && k !== 'hires' && k !== 'loras') set(k, v);
    if (values.hires) {
      set('hires_on', true);
      set('hires_scale', values.hires.scale);
      set('hires_upscaler', values.hires.upscaler);
      set('hires_steps', values.hires.steps);
      set('hires_denoising', values.hires.denoising_strength);
    }
    if (values.loras) for (const l of values.loras) this.addLora(l.name, l.weight);
    this.syncToggles();
    this.form.dispatchEvent(new Event('values'));
    this.save();
  }

  save() {
    const values = {};
    for (const field of this.form.elements) {
      if (!field.name || field.type === 'file' || field.type === 'radio') continue;
      values[field.name] = field.type === 'checkbox' ? field.checked : field.value;
    }
    values.loras = [...this.loras];
    localStorage.setItem(STORAGE, JSON.stringify(values));
  }

  restore() {
    let values;
    try {
      values = JSON.parse(localStorage.getItem(STORAGE) ?? 'null');
    } catch {
      return;
    }
    if (!values) return;
    for (const field of this.form.elements) {
      if (!field.name || !(field.name in values) || field.type === 'file' || field.type === 'radio') continue;
      if (field.type === 'checkbox') field.checked = values[field.name];
      // A saved model or sampler the server no longer has keeps the server's default.
      else if (field.tagName !== 'SELECT' || [...field.options].some((o) => o.value === values[field.name])) field.value = values[field.name];
    }
    this.loras = new Map(Array.isArray(values.loras) ? values.loras : []);
    this.renderLoras();
    this.syncToggles();
    this.form.dispatchEvent(new Event('values'));
  }

  /** Option groups that follow their checkbox. */
  syncToggles() {
    this.form.querySelector('#hires-options').hidden = !this.el('hires_on').checked;
  }
}

function fill(select, options) {
  const keep = select.value;
  select.replaceChildren(...options.map(([value, label]) => new Option(label, value)));
  if (options.some(([value]) => value === keep)) select.value = keep;
}
