// Small SVG charts for the dashboard, drawn from plain numbers: stacked bars over time,
// horizontal bars (one or more per row), and a donut. Every chart carries its numbers as
// text and each mark a <title>, so that values can be read without hovering or guessing.

type Attrs = Record<string, string | number | undefined>;
const NS = 'http://www.w3.org/2000/svg';

/** An SVG element; text goes in as a text node. */
export function svg<K extends keyof SVGElementTagNameMap>(tag: K, attrs: Attrs = {}, ...children: (Node | string | null | undefined)[]): SVGElementTagNameMap[K] {
  const el = document.createElementNS(NS, tag);
  for (const [name, value] of Object.entries(attrs)) if (value !== undefined) el.setAttribute(name, String(value));
  for (const child of children) if (child !== null && child !== undefined) el.append(child);
  return el;
}

function title(text: string): SVGTitleElement {
  return svg('title', {}, text);
}

/** Up to about `count` round tick values from 0 to at least `max`. */
export function ticks(max: number, count = 5): number[] {
  if (!(max > 0)) return [0, 1];
  const raw = max / count;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * magnitude).find((s) => s >= raw) ?? 10 * magnitude;
  const whole = Math.max(1, step);
  const values: number[] = [];
  for (let v = 0; v < max + whole - 1e-9; v += whole) values.push(v);
  return values;
}

function clip(text: string, max: number): string {
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

export interface StackSeries {
  key: string;
  label: string;
  colour: string;
}

export interface StackedBarsSpec {
  buckets: string[];
  bucketLabel(bucket: string): string;
  series: StackSeries[];
  value(bucket: string, key: string): number;
  xLabel: string;
  yLabel: string;
  format(n: number): string;
  label: string;
  /** Drawn at this width in CSS pixels, so that text keeps its size. */
  width: number;
}

/** Bars over time, one segment per series, with a y axis of counts and labelled buckets. */
export function stackedBars(spec: StackedBarsSpec): SVGSVGElement {
  const W = Math.max(320, Math.round(spec.width));
  const H = 300;
  const m = { left: 56, right: 12, top: 14, bottom: 46 };
  const plotW = W - m.left - m.right;
  const plotH = H - m.top - m.bottom;
  const totals = spec.buckets.map((b) => spec.series.reduce((sum, s) => sum + spec.value(b, s.key), 0));
  const axis = ticks(Math.max(0, ...totals));
  const top = axis[axis.length - 1] || 1;
  const y = (v: number) => m.top + plotH - (v / top) * plotH;
  const band = plotW / Math.max(1, spec.buckets.length);
  const barW = Math.max(1, band * 0.78);
  // As many bucket labels as fit, about 80 pixels apart.
  const every = Math.max(1, Math.ceil(spec.buckets.length / Math.max(2, Math.floor(plotW / 80))));
  const root = svg('svg', { viewBox: `0 0 ${W} ${H}`, width: W, height: H, class: 'chart', role: 'img', 'aria-label': spec.label });
  const grid = svg('g', { class: 'grid' });
  for (const v of axis) {
    grid.append(
      svg('line', { x1: m.left, x2: W - m.right, y1: y(v), y2: y(v) }),
      svg('text', { x: m.left - 6, y: y(v), 'text-anchor': 'end', 'dominant-baseline': 'middle', class: 'tick' }, spec.format(v)),
    );
  }
  root.append(grid);
  const bars = svg('g', { class: 'bars' });
  spec.buckets.forEach((bucket, i) => {
    const x = m.left + i * band + (band - barW) / 2;
    let base = 0;
    for (const s of spec.series) {
      const v = spec.value(bucket, s.key);
      if (v <= 0) continue;
      bars.append(
        svg(
          'rect',
          { x, y: y(base + v), width: barW, height: Math.max(0.5, y(base) - y(base + v)), fill: s.colour, class: 'bar', 'data-series': s.key },
          title(`${spec.bucketLabel(bucket)} · ${s.label}: ${spec.format(v)}`),
        ),
      );
      base += v;
    }
    if (i % every === 0) {
      bars.append(svg('text', { x: x + barW / 2, y: H - m.bottom + 16, 'text-anchor': 'middle', class: 'tick' }, spec.bucketLabel(bucket)));
    }
  });
  root.append(
    bars,
    svg('line', { x1: m.left, x2: W - m.right, y1: y(0), y2: y(0), class: 'axis' }),
    svg('text', { x: m.left + plotW / 2, y: H - 6, 'text-anchor': 'middle', class: 'axis-label' }, spec.xLabel),
    svg('text', { x: 14, y: m.top + plotH / 2, 'text-anchor': 'middle', class: 'axis-label', transform: `rotate(-90 14 ${m.top + plotH / 2})` }, spec.yLabel),
  );
  return root;
}

export interface BarPart {
  value: number;
  colour: string;
  /** What is written after the bar (the number, a percentage with its counts). */
  text: string;
  title?: string;
}

export interface BarRow {
  label: string;
  parts: BarPart[];
}

export interface BarsSpec {
  rows: BarRow[];
  /** The value a full bar stands for (1 for shares). */
  max?: number;
  format(n: number): string;
  axisLabel: string;
  label: string;
  width: number;
}

/** Horizontal bars, one or more per row, with their numbers written after them. */
export function horizontalBars(spec: BarsSpec): SVGSVGElement {
  const W = Math.max(320, Math.round(spec.width));
  const labelW = Math.round(Math.min(190, W * 0.3));
  const textW = Math.round(Math.min(140, W * 0.27));
  const partH = 14;
  const gap = 3;
  const rowGap = 10;
  const top = 8;
  const perRow = Math.max(1, ...spec.rows.map((r) => r.parts.length));
  const rowH = perRow * partH + (perRow - 1) * gap;
  const plotH = spec.rows.length * (rowH + rowGap);
  const H = top + plotH + 34;
  const plotW = W - labelW - textW;
  const max = spec.max ?? Math.max(0, ...spec.rows.flatMap((r) => r.parts.map((p) => p.value)));
  const axis = spec.max !== undefined ? [0, 0.25, 0.5, 0.75, 1].map((f) => f * spec.max!) : ticks(max, 4);
  const end = axis[axis.length - 1] || 1;
  const x = (v: number) => labelW + (Math.max(0, v) / end) * plotW;
  const root = svg('svg', { viewBox: `0 0 ${W} ${H}`, width: W, height: H, class: 'chart', role: 'img', 'aria-label': spec.label });
  const grid = svg('g', { class: 'grid' });
  for (const v of axis) {
    grid.append(
      svg('line', { x1: x(v), x2: x(v), y1: top - 4, y2: top + plotH }),
      svg('text', { x: x(v), y: top + plotH + 14, 'text-anchor': 'middle', class: 'tick' }, spec.format(v)),
    );
  }
  root.append(grid);
  spec.rows.forEach((row, i) => {
    const y0 = top + i * (rowH + rowGap);
    const g = svg('g', { class: 'row' });
    g.append(svg('text', { x: labelW - 8, y: y0 + rowH / 2, 'text-anchor': 'end', 'dominant-baseline': 'middle', class: 'row-label' }, clip(row.label, Math.max(8, Math.floor(labelW / 7))), title(row.label)));
    row.parts.forEach((part, j) => {
      const y = y0 + j * (partH + gap);
      g.append(
        svg('rect', { x: labelW, y, width: Math.max(part.value > 0 ? 1 : 0, x(part.value) - labelW), height: partH, fill: part.colour, class: 'bar' }, title(part.title ?? `${row.label}: ${part.text}`)),
        svg('text', { x: x(part.value) + 6, y: y + partH / 2, 'dominant-baseline': 'middle', class: 'value' }, part.text),
      );
    });
    root.append(g);
  });
  root.append(
    svg('line', { x1: labelW, x2: labelW, y1: top - 4, y2: top + plotH, class: 'axis' }),
    svg('text', { x: labelW + plotW / 2, y: H - 4, 'text-anchor': 'middle', class: 'axis-label' }, spec.axisLabel),
  );
  return root;
}

export interface DonutPart {
  label: string;
  value: number;
  colour: string;
}

/** A ring of shares with a figure in the middle. */
export function donut(parts: DonutPart[], centre: string, under: string, label: string): SVGSVGElement {
  const size = 200;
  const r = 72;
  const stroke = 26;
  const c = 2 * Math.PI * r;
  const total = parts.reduce((s, p) => s + p.value, 0);
  const root = svg('svg', { viewBox: `0 0 ${size} ${size}`, width: size, height: size, class: 'chart donut', role: 'img', 'aria-label': label });
  root.append(svg('circle', { cx: size / 2, cy: size / 2, r, fill: 'none', stroke: '#e6e9ed', 'stroke-width': stroke }));
  let offset = 0;
  for (const part of parts) {
    if (!(part.value > 0) || !(total > 0)) continue;
    const length = (part.value / total) * c;
    root.append(
      svg(
        'circle',
        {
          cx: size / 2,
          cy: size / 2,
          r,
          fill: 'none',
          stroke: part.colour,
          'stroke-width': stroke,
          'stroke-dasharray': `${length} ${c - length}`,
          'stroke-dashoffset': -offset,
          transform: `rotate(-90 ${size / 2} ${size / 2})`,
          class: 'slice',
        },
        title(`${part.label}: ${part.value}`),
      ),
    );
    offset += length;
  }
  root.append(
    svg('text', { x: size / 2, y: size / 2 - 4, 'text-anchor': 'middle', class: 'donut-figure' }, centre),
    svg('text', { x: size / 2, y: size / 2 + 18, 'text-anchor': 'middle', class: 'donut-under' }, under),
  );
  return root;
}

/** Ten colours that stay apart for the categories of a stacked chart (Tableau 10). */
export const PALETTE = ['#4e79a7', '#f28e2b', '#e15759', '#76b7b2', '#59a14f', '#edc948', '#b07aa1', '#ff9da7', '#9c755f', '#bab0ac'];
