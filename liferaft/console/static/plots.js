// Five hand-drawn SVG line plots of the rates over the last 5 minutes (no
// charting library: a polyline per plot is all this needs, and nothing may
// be fetched from the internet).  A missing value (null) or a gap of more
// than 3 s between samples breaks the line rather than drawing across it.

const NS = 'http://www.w3.org/2000/svg';
const WINDOW_S = 300;
const W = 320, H = 96, LEFT = 40, TOP = 6, BOTTOM = 16;
const RATES = [
  ['writes_per_s', 'writes/s', ''],
  ['reads_per_s', 'reads/s', ''],
  ['commit_p50_ms', 'commit p50', ' ms'],
  ['commit_p99_ms', 'commit p99', ' ms'],
  ['apply_lag', 'apply lag', ' entries'],
];

function svg(tag, attrs = {}, text) {
  const e = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

// A round upper bound for the y axis: 1, 2, 5, 10, 20, 50, ...
function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

const fmt = (v) => (v === null || v === undefined ? '–'
  : Math.abs(v) >= 100 || Number.isInteger(v) ? String(Math.round(v)) : v.toFixed(1));

export class Plots {
  constructor(box) {
    this.samples = [];
    this.plots = RATES.map(([key, label, unit]) => {
      const fig = document.createElement('figure');
      fig.className = 'plot';
      const cap = document.createElement('figcaption');
      const plot = svg('svg', {
        class: 'plot', 'data-rate': key, viewBox: `0 0 ${W} ${H}`, role: 'img',
        'aria-label': `${label} over the last 5 minutes`,
      });
      fig.append(cap, plot);
      box.append(fig);
      return { key, label, unit, cap, plot };
    });
    this.draw();
  }

  clear() {
    this.samples = [];
    this.draw();
  }

  reset(history) {
    this.samples = history.filter((s) => s && typeof s.t === 'number');
    this.draw();
  }

  add(rates) {
    if (!rates || typeof rates.t !== 'number') return;
    const last = this.samples[this.samples.length - 1];
    if (last && rates.t <= last.t) return;   // the first line's rates may repeat its history's last
    this.samples.push(rates);
    const from = rates.t - WINDOW_S;
    while (this.samples.length && this.samples[0].t < from) this.samples.shift();
    this.draw();
  }

  draw() {
    const now = this.samples.length ? this.samples[this.samples.length - 1].t : 0;
    for (const p of this.plots) this.drawOne(p, now);
  }

  drawOne({ key, label, unit, cap, plot }, now) {
    const pts = this.samples.map((s) => [s.t, s[key]]);
    const vals = pts.map(([, v]) => v).filter((v) => typeof v === 'number');
    const peak = Math.max(0, ...vals);
    const top = niceMax(peak);
    plot.dataset.max = String(peak);   // the window's peak (tests read it)
    const current = pts.length ? pts[pts.length - 1][1] : null;
    cap.textContent = `${label}: ${fmt(current)}${current === null || current === undefined ? '' : unit}`;
    const x = (t) => LEFT + ((t - (now - WINDOW_S)) / WINDOW_S) * (W - LEFT - 2);
    const y = (v) => TOP + (1 - v / top) * (H - TOP - BOTTOM);
    const kids = [];
    for (const frac of [0, 0.5, 1]) {
      const yy = y(top * frac);
      kids.push(svg('line', { class: 'grid', x1: LEFT, x2: W - 2, y1: yy, y2: yy }));
      kids.push(svg('text', { class: 'axis', x: LEFT - 4, y: yy + 3, 'text-anchor': 'end' }, fmt(top * frac)));
    }
    kids.push(svg('text', { class: 'axis', x: LEFT, y: H - 3 }, '-5 min'));
    kids.push(svg('text', { class: 'axis', x: W - 2, y: H - 3, 'text-anchor': 'end' }, 'now'));
    let d = '';
    let prevT = null;
    for (const [t, v] of pts) {
      if (typeof v !== 'number') { prevT = null; continue; }
      d += `${prevT === null || t - prevT > 3 ? 'M' : 'L'}${x(t).toFixed(1)},${y(v).toFixed(1)} `;
      prevT = t;
    }
    if (d) kids.push(svg('path', { class: 'line', d }));
    // The latest value as a dot, so a line of one sample still shows.
    if (typeof current === 'number') {
      kids.push(svg('circle', { class: 'dot', cx: x(now).toFixed(1), cy: y(current).toFixed(1), r: 2.2 }));
    }
    if (!pts.length) kids.push(svg('text', { class: 'axis', x: W / 2, y: H / 2, 'text-anchor': 'middle' }, 'no data yet'));
    plot.replaceChildren(...kids);
  }
}
