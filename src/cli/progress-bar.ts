// The one terminal progress bar (cli-progress) for every CLI command: generation steps, downloads, graph builds.
// On a TTY it redraws one line on stderr; otherwise it stays silent apart from the final line (and, for long
// downloads, a line every 10 s) so logs stay readable.
import cliProgress from 'cli-progress';
import type { DownloadProgress } from '../download/fetch-file.ts';

const LOG_INTERVAL_MS = 10_000;

export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${v.toFixed(u === 0 ? 0 : 1)} ${units[u]}`;
}

export function formatSeconds(s: number): string {
  if (!Number.isFinite(s)) return '?';
  if (s < 60) return `${Math.round(s)}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(Math.round(s % 60)).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

/** "12.0 MiB / 40.0 MiB, 3.1 MiB/s, ETA 9s" */
export function describeDownload(p: DownloadProgress): string {
  const total = p.total !== undefined ? ` / ${formatBytes(p.total)}` : '';
  const eta = p.etaSeconds !== undefined ? `, ETA ${formatSeconds(p.etaSeconds)}` : '';
  return `${formatBytes(p.received)}${total}, ${formatBytes(p.bytesPerSecond)}/s${eta}`;
}

export class ProgressBar {
  private readonly bar?: cliProgress.SingleBar;
  private lastLog = 0;

  constructor(
    private label: string,
    private readonly stream: NodeJS.WriteStream = process.stderr,
  ) {
    if (stream.isTTY) {
      this.bar = new cliProgress.SingleBar(
        { stream, format: '{label} [{bar}] {percentage}% {detail}', barsize: 30, hideCursor: false, clearOnComplete: true, fps: 10 },
        cliProgress.Presets.legacy,
      );
      this.bar.start(1000, 0, { label, detail: '' });
    }
  }

  update(fraction: number, detail = ''): void {
    this.bar?.update(Math.round(Math.max(0, Math.min(1, fraction)) * 1000), { label: this.label, detail });
  }

  /** Progress with a line of its own off a terminal: `milestone` lines always, others at most every 10 s. */
  status(fraction: number, detail: string, milestone = false): void {
    if (this.bar) {
      this.update(fraction, detail);
      return;
    }
    if (!milestone && Date.now() - this.lastLog < LOG_INTERVAL_MS) return;
    this.lastLog = Date.now();
    this.stream.write(`${detail}\n`);
  }

  /** A download's bytes, rate and ETA; a new label starts a new line (several files in one pull). */
  download(p: DownloadProgress): void {
    if (p.label !== this.label) this.label = p.label;
    const detail = describeDownload(p);
    if (this.bar) this.update(p.total ? p.received / p.total : 0, detail);
    else if (Date.now() - this.lastLog >= LOG_INTERVAL_MS) {
      this.lastLog = Date.now();
      this.stream.write(`${p.label}: ${detail}\n`);
    }
  }

  done(message: string): void {
    this.bar?.stop();
    this.stream.write(`${message}\n`);
  }
}
