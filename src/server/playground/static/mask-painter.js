// The inpainting mask painter: strokes drawn over the init image on a canvas at the image's own size (white =
// repaint), exported as a black-and-white PNG data URL for the native `mask.image` field.

export class MaskPainter {
  constructor(canvas, brushInput) {
    this.canvas = canvas;
    this.brush = brushInput;
    this.ctx = canvas.getContext('2d');
    this.painted = false;
    let last;
    const point = (e) => {
      const r = canvas.getBoundingClientRect();
      return [((e.clientX - r.left) * canvas.width) / r.width, ((e.clientY - r.top) * canvas.height) / r.height];
    };
    const radius = () => (Number(this.brush.value) * canvas.width) / Math.max(1, canvas.getBoundingClientRect().width) / 2;
    const dab = (from, to) => {
      const c = this.ctx;
      c.strokeStyle = c.fillStyle = '#fff';
      c.lineCap = 'round';
      c.lineWidth = radius() * 2;
      c.beginPath();
      c.moveTo(...from);
      c.lineTo(...to);
      c.stroke();
      this.painted = true;
    };
    canvas.addEventListener('pointerdown', (e) => {
      canvas.setPointerCapture(e.pointerId);
      last = point(e);
      dab(last, last);
    });
    canvas.addEventListener('pointermove', (e) => {
      if (!last) return;
      const p = point(e);
      dab(last, p);
      last = p;
    });
    const stop = () => {
      last = undefined;
    };
    canvas.addEventListener('pointerup', stop);
    canvas.addEventListener('pointercancel', stop);
  }

  /** Starts a fresh, empty mask at the image's size. */
  reset(width, height) {
    this.canvas.width = width;
    this.canvas.height = height;
    this.clear();
  }

  clear() {
    this.ctx.clearRect(0, 0, this.canvas.width, this.canvas.height);
    this.painted = false;
  }

  /** The mask as PNG: black background, the painted strokes white. */
  toDataUrl() {
    const out = document.createElement('canvas');
    out.width = this.canvas.width;
    out.height = this.canvas.height;
    const c = out.getContext('2d');
    c.fillStyle = '#000';
    c.fillRect(0, 0, out.width, out.height);
    c.drawImage(this.canvas, 0, 0);
    return out.toDataURL('image/png');
  }
}
