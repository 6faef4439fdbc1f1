// Small canvas charts (no library): a line over time and bars by category. Each chart records what
// it drew in the canvas's data-points attribute, so tests can check data, not just an element.
const AXIS = "#9aa3ad";
export const LINE_COLOR = "#2563eb";
export const BAR_COLOR = "#0f766e";

function setup(canvas) {
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  ctx.font = "11px system-ui, sans-serif";
  return ctx;
}

function fmt(v) {
  if (v === 0) return "0";
  if (Math.abs(v) >= 100) return v.toFixed(0);
  if (Math.abs(v) >= 1) return v.toFixed(1);
  return v.toPrecision(2);
}

function frame(ctx, canvas, max, left = 44) {
  const w = canvas.width, h = canvas.height, top = 8, bottom = h - 20;
  ctx.strokeStyle = AXIS;
  ctx.fillStyle = AXIS;
  ctx.lineWidth = 1;
  ctx.beginPath();
  ctx.moveTo(left, top);
  ctx.lineTo(left, bottom);
  ctx.lineTo(w - 6, bottom);
  ctx.stroke();
  ctx.textAlign = "right";
  ctx.fillText(fmt(max), left - 4, top + 8);
  ctx.fillText("0", left - 4, bottom);
  return { x0: left, x1: w - 6, y0: bottom, y1: top };
}

// points: [{t (ms), v}] ascending by t.
export function lineChart(canvas, points, { minMax = 1 } = {}) {
  const ctx = setup(canvas);
  const pts = points.filter((p) => Number.isFinite(p.v));
  const max = Math.max(minMax, ...pts.map((p) => p.v)) * 1.1;
  const f = frame(ctx, canvas, max);
  canvas.dataset.points = String(pts.length);
  canvas.dataset.max = String(Math.max(0, ...pts.map((p) => p.v)));
  if (pts.length === 0) {
    ctx.textAlign = "center";
    ctx.fillText("no samples yet", (f.x0 + f.x1) / 2, (f.y0 + f.y1) / 2);
    return;
  }
  const t0 = pts[0].t, t1 = Math.max(pts[pts.length - 1].t, t0 + 1);
  const x = (t) => f.x0 + ((t - t0) / (t1 - t0)) * (f.x1 - f.x0);
  const y = (v) => f.y0 - (v / max) * (f.y0 - f.y1);
  ctx.strokeStyle = LINE_COLOR;
  ctx.fillStyle = LINE_COLOR;
  ctx.lineWidth = 2;
  ctx.beginPath();
  pts.forEach((p, i) => (i ? ctx.lineTo(x(p.t), y(p.v)) : ctx.moveTo(x(p.t), y(p.v))));
  ctx.stroke();
  for (const p of pts) ctx.fillRect(x(p.t) - 1.5, y(p.v) - 1.5, 3, 3);
  ctx.fillStyle = AXIS;
  ctx.textAlign = "left";
  ctx.fillText(new Date(t0).toLocaleTimeString(), f.x0, f.y0 + 14);
  ctx.textAlign = "right";
  ctx.fillText(new Date(t1).toLocaleTimeString(), f.x1, f.y0 + 14);
}

// bars: [{label, v}]. Labels are drawn with fillText: canvas text is never markup.
export function barChart(canvas, bars) {
  const ctx = setup(canvas);
  const max = Math.max(1e-6, ...bars.map((b) => b.v)) * 1.1;
  const f = frame(ctx, canvas, max, 52);
  canvas.dataset.points = String(bars.length);
  canvas.dataset.max = String(Math.max(0, ...bars.map((b) => b.v)));
  if (bars.length === 0) {
    ctx.textAlign = "center";
    ctx.fillText("no usage in this range", (f.x0 + f.x1) / 2, (f.y0 + f.y1) / 2);
    return;
  }
  const slot = (f.x1 - f.x0) / bars.length;
  const bw = Math.max(2, Math.min(40, slot * 0.7));
  bars.forEach((b, i) => {
    const cx = f.x0 + slot * (i + 0.5);
    const top = f.y0 - (b.v / max) * (f.y0 - f.y1);
    ctx.fillStyle = BAR_COLOR;
    ctx.fillRect(cx - bw / 2, top, bw, Math.max(1, f.y0 - top));
    if (bars.length <= 16) {
      ctx.fillStyle = AXIS;
      ctx.textAlign = "center";
      const text = String(b.label);
      ctx.fillText(text.length > 12 ? `${text.slice(0, 11)}…` : text, cx, f.y0 + 14, slot);
    }
  });
}
