// A line chart of cache bytes against tokens in context, drawn by hand on a <canvas>.

export const BACKGROUND = '#ffffff';
const GRID = '#e7e9ee';
const AXIS = '#9aa1ad';
const LABEL = '#5b6270';
const FONT = '11px system-ui, -apple-system, "Segoe UI", Roboto, sans-serif';
const PAD = { left: 66, right: 16, top: 14, bottom: 34 };

/** 1, 2 or 5 × 10^k, the smallest such step that gives at most `count` intervals over `range`. */
function niceStep(range, count) {
  const raw = range / count;
  const pow = 10 ** Math.floor(Math.log10(raw));
  for (const m of [1, 2, 5, 10]) if (m * pow >= raw) return m * pow;
  return 10 * pow;
}

/** The unit of the byte axis: MiB from 1 MiB, KiB from 1 KiB, else bytes. */
function byteUnit(max) {
  return max >= 1024 * 1024 ? [1024 * 1024, 'MiB'] : max >= 1024 ? [1024, 'KiB'] : [1, 'B'];
}

/**
 * @param {HTMLCanvasElement} canvas
 * @param {{ maxTokens: number, maxBytes: number,
 *           series: { label: string, color: string, dashed: boolean, width: number, points: [number, number][] }[] }} data
 */
export function drawChart(canvas, { maxTokens, maxBytes, series }) {
  const dpr = window.devicePixelRatio || 1;
  const cssWidth = canvas.clientWidth || 600;
  const cssHeight = canvas.clientHeight || 280;
  if (canvas.width !== Math.round(cssWidth * dpr) || canvas.height !== Math.round(cssHeight * dpr)) {
    canvas.width = Math.round(cssWidth * dpr);
    canvas.height = Math.round(cssHeight * dpr);
  }
  const ctx = canvas.getContext('2d');
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.fillStyle = BACKGROUND;
  ctx.fillRect(0, 0, cssWidth, cssHeight);

  const w = cssWidth - PAD.left - PAD.right;
  const h = cssHeight - PAD.top - PAD.bottom;
  const xMax = Math.max(1, maxTokens);
  const yMax = Math.max(1, maxBytes) * 1.04;
  const x = (n) => PAD.left + (n / xMax) * w;
  const y = (b) => PAD.top + h - (b / yMax) * h;

  // Grid and tick labels.
  ctx.font = FONT;
  ctx.lineWidth = 1;
  ctx.setLineDash([]);
  ctx.fillStyle = LABEL;
  ctx.textAlign = 'right';
  ctx.textBaseline = 'middle';
  const [unit, unitName] = byteUnit(yMax);
  const yStep = niceStep(yMax / unit, 5) * unit;
  for (let b = 0; b <= yMax; b += yStep) {
    const py = Math.round(y(b)) + 0.5;
    ctx.strokeStyle = GRID;
    ctx.beginPath();
    ctx.moveTo(PAD.left, py);
    ctx.lineTo(PAD.left + w, py);
    ctx.stroke();
    ctx.fillText(`${Number((b / unit).toFixed(2))} ${unitName}`, PAD.left - 8, py);
  }
  ctx.textAlign = 'center';
  ctx.textBaseline = 'top';
  const xStep = niceStep(xMax, 8);
  for (let n = 0; n <= xMax; n += xStep) {
    const px = Math.round(x(n)) + 0.5;
    ctx.strokeStyle = GRID;
    ctx.beginPath();
    ctx.moveTo(px, PAD.top);
    ctx.lineTo(px, PAD.top + h);
    ctx.stroke();
    ctx.fillText(String(n), px, PAD.top + h + 6);
  }
  ctx.fillText('tokens in context', PAD.left + w / 2, PAD.top + h + 20);

  // Axes.
  ctx.strokeStyle = AXIS;
  ctx.beginPath();
  ctx.moveTo(PAD.left + 0.5, PAD.top);
  ctx.lineTo(PAD.left + 0.5, PAD.top + h + 0.5);
  ctx.lineTo(PAD.left + w, PAD.top + h + 0.5);
  ctx.stroke();

  // Series: computed ones first (dashed), the measured one on top.
  const ordered = [...series].sort((a, b) => Number(a.dashed === false) - Number(b.dashed === false));
  for (const s of ordered) {
    if (s.points.length === 0) continue;
    ctx.strokeStyle = s.color;
    ctx.lineWidth = s.width;
    ctx.lineJoin = 'round';
    ctx.setLineDash(s.dashed ? [6, 4] : []);
    ctx.beginPath();
    s.points.forEach(([n, b], i) => (i === 0 ? ctx.moveTo(x(n), y(b)) : ctx.lineTo(x(n), y(b))));
    ctx.stroke();
    const [ln, lb] = s.points[s.points.length - 1];
    ctx.setLineDash([]);
    ctx.fillStyle = s.color;
    ctx.beginPath();
    ctx.arc(x(ln), y(lb), s.dashed ? 2.5 : 3.5, 0, 2 * Math.PI);
    ctx.fill();
  }
  ctx.setLineDash([]);
}
