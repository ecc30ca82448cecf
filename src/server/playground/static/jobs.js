// Jobs on the page: each one submitted to POST v1/jobs, followed over its SSE stream (state, progress every step,
// live previews, then succeeded / failed / cancelled), polled when the stream breaks, cancellable, and its images
// stored in this browser's gallery. Unfinished jobs are remembered in localStorage, so a reload picks them up.

import { api, fetchBlob, serverEvents } from './api.js';
import { putImage } from './gallery-store.js';

const ACTIVE = 'kiln.activeJobs';
const FINAL = new Set(['succeeded', 'failed', 'cancelled']);
const POLL_MS = 1000;

const loadActive = () => {
  try {
    return JSON.parse(localStorage.getItem(ACTIVE) ?? '[]');
  } catch {
    return [];
  }
};

export class JobList {
  constructor(list, template, { onImages, onEmpty, toast, view }) {
    this.list = list;
    this.template = template;
    this.onImages = onImages;
    this.onEmpty = onEmpty;
    this.toast = toast;
    this.view = view;
    this.active = loadActive();
    for (const job of this.active) this.track(job.id, job.title, job.kind);
  }

  remember() {
    localStorage.setItem(ACTIVE, JSON.stringify(this.active));
  }

  /** Submits one job (generate or upscale) and shows it; the answer is the job id. */
  async submit(body, { path = 'v1/jobs', title = body.prompt ?? '', kind = 'generate' } = {}) {
    const job = await api(path, { method: 'POST', body });
    this.active.push({ id: job.id, title, kind });
    this.remember();
    this.track(job.id, title, kind, job);
    return job;
  }

  track(id, title, kind, first) {
    const li = this.template.content.firstElementChild.cloneNode(true);
    li.dataset.jobId = id;
    li.dataset.maxStep = '0';
    li.querySelector('.job-title').textContent = (kind === 'upscale' ? 'Upscale: ' : '') + (title.slice(0, 80) || '(empty prompt)');
    li.querySelector('.cancel').addEventListener('click', () => this.cancel(id, li));
    this.list.prepend(li);
    this.onEmpty(false);
    const job = { id, li, kind, title, startedAt: undefined, startProgress: 0, previewBusy: false, previewWanted: false };
    if (first) this.showState(job, first);
    void this.follow(job);
  }

  async follow(job) {
    for (let attempt = 0; attempt < 5; attempt++) {
      try {
        for await (const { event, data } of serverEvents(`v1/jobs/${job.id}/events`)) {
          if (event === 'progress') this.showProgress(job, data);
          else if (event === 'state') this.showState(job, data);
          else if (FINAL.has(event)) return this.finish(job, data);
        }
      } catch (e) {
        if (e.status === 404 || e.status === 401) return this.finish(job, { state: 'failed', error: { message: e.message } });
      }
      // The stream broke (proxy, network): poll until the job ends, then stop.
      try {
        for (;;) {
          const view = await api(`v1/jobs/${job.id}?response=url`);
          if (FINAL.has(view.state)) return this.finish(job, view);
          this.showState(job, view);
          await new Promise((r) => setTimeout(r, POLL_MS));
        }
      } catch (e) {
        if (e.status === 404 || e.status === 401) return this.finish(job, { state: 'failed', error: { message: e.message } });
        await new Promise((r) => setTimeout(r, POLL_MS));
      }
    }
    this.finish(job, { state: 'failed', error: { message: 'lost contact with the server' } });
  }

  showState(job, s) {
    const li = job.li;
    li.dataset.state = s.state;
    li.querySelector('.job-state').textContent = s.state;
    const bits = [];
    // position counts the queued jobs ahead of this one (0: it runs next).
    if (s.state === 'queued') bits.push(s.position ? `${s.position} queued ahead` : 'next in the queue');
    if (s.eta_seconds !== null && s.eta_seconds !== undefined) bits.push(`ETA ${formatSeconds(s.eta_seconds)}`);
    if (bits.length) li.querySelector('.job-info').textContent = bits.join(' · ');
  }

  showProgress(job, p) {
    const li = job.li;
    li.dataset.state = 'running';
    li.querySelector('.job-state').textContent = 'running';
    li.querySelector('progress').value = p.progress;
    if (p.step > Number(li.dataset.maxStep)) li.dataset.maxStep = String(p.step);
    // ETA from this page's own view of the pace: time so far over progress so far.
    const now = performance.now();
    if (job.startedAt === undefined) {
      job.startedAt = now;
      job.startProgress = p.progress;
    }
    const done = p.progress - job.startProgress;
    const eta = done > 0 ? ((now - job.startedAt) / done) * (1 - p.progress) : undefined;
    li.querySelector('.job-info').textContent = [
      p.total_steps ? `step ${p.step}/${p.total_steps}` : '',
      p.phase ?? '',
      `${Math.round(p.progress * 100)}%`,
      eta !== undefined ? `ETA ${formatSeconds(eta / 1000)}` : '',
    ]
      .filter(Boolean)
      .join(' · ');
    if (p.preview_url) this.loadPreview(job);
  }

  /** Latest preview wins: while one is loading, a newer one is only noted and fetched afterwards. */
  async loadPreview(job) {
    if (job.previewBusy) {
      job.previewWanted = true;
      return;
    }
    job.previewBusy = true;
    try {
      const blob = await fetchBlob(`v1/jobs/${job.id}/preview`);
      if (job.li.dataset.state !== 'running') return;
      const img = job.li.querySelector('.preview');
      URL.revokeObjectURL(img.src);
      img.src = URL.createObjectURL(blob);
      img.hidden = false;
    } catch {
      /* the job ended between the event and the fetch */
    } finally {
      job.previewBusy = false;
      if (job.previewWanted && job.li.dataset.state === 'running') {
        job.previewWanted = false;
        void this.loadPreview(job);
      }
    }
  }

  async cancel(id, li) {
    li.querySelector('.cancel').disabled = true;
    try {
      await api(`v1/jobs/${id}/cancel`, { method: 'POST' });
    } catch (e) {
      this.toast(`Cancel failed: ${e.message}`);
      li.querySelector('.cancel').disabled = false;
    }
  }

  async finish(job, view) {
    if (job.finished) return;
    job.finished = true;
    const li = job.li;
    li.dataset.state = view.state;
    li.querySelector('.job-state').textContent = view.state;
    const cancel = li.querySelector('.cancel');
    cancel.textContent = 'Dismiss';
    cancel.disabled = false;
    cancel.replaceWith(cancel.cloneNode(true));
    li.querySelector('.cancel').addEventListener('click', () => {
      li.remove();
      this.onEmpty(!this.list.children.length);
    });
    const preview = li.querySelector('.preview');
    URL.revokeObjectURL(preview.src);
    preview.hidden = true;
    this.active = this.active.filter((j) => j.id !== job.id);
    this.remember();
    if (view.state === 'failed') li.querySelector('.job-info').textContent = view.error?.message ?? 'failed';
    if (view.state === 'cancelled') li.querySelector('.job-info').textContent = 'cancelled';
    if (view.state !== 'succeeded') return;
    li.querySelector('progress').value = 1;
    const t = view.timings?.total_ms ?? view.timings?.run_ms;
    li.querySelector('.job-info').textContent = `${view.images?.length ?? 0} image(s)${t ? ` in ${formatSeconds(t / 1000)}` : ''}`;
    const records = [];
    for (const image of view.images ?? []) {
      try {
        const blob = await fetchBlob(`v1/images/${encodeURIComponent(image.name)}`);
        const record = {
          name: image.name,
          jobId: view.id,
          createdAt: Date.now(),
          seed: image.seed,
          prompt: image.prompt || job.title || '',
          infotext: image.infotext ?? '',
          width: image.width,
          height: image.height,
          format: image.format,
          request: view.request,
          blob,
        };
        await putImage(record);
        records.push(record);
        const img = document.createElement('img');
        img.src = URL.createObjectURL(blob);
        img.alt = `seed ${image.seed}`;
        img.className = 'result';
        img.addEventListener('click', () => this.view(img.src));
        li.querySelector('.job-images').append(img);
      } catch (e) {
        this.toast(`Could not fetch ${image.name}: ${e.message}`);
      }
    }
    this.onImages(records, view);
  }
}

export function formatSeconds(s) {
  if (s < 60) return `${s < 10 ? s.toFixed(1) : Math.round(s)} s`;
  return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
}
