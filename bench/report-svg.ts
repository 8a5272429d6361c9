/**
 * Hand-written SVG: one panel per scenario + figure with the empirical CDF of each system's latencies (x: ms, y: share
 * of flips at or below), the p50/p95/p99 in the legend. No dependency.
 */
import type { Figure } from './report.js';

const COLORS: Record<string, string> = { vipcast: '#1f77b4', exabgp: '#d95f02' };
const LABELS: Record<string, string> = { vipcast: 'vipcast', exabgp: 'ExaBGP healthcheck' };
const W = 460;
const H = 280;
const M = { left: 48, right: 14, top: 34, bottom: 40 };

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

function niceStep(max: number): number {
  const raw = max / 5;
  const mag = 10 ** Math.floor(Math.log10(raw));
  return [1, 2, 5, 10].map((k) => k * mag).find((s) => s >= raw) ?? raw;
}

function panel(title: string, curves: Figure[], x0: number, y0: number): string {
  const pw = W - M.left - M.right;
  const ph = H - M.top - M.bottom;
  const max = Math.max(...curves.map((f) => f.spread.max)) * 1.05 || 1;
  const step = niceStep(max);
  const xmax = Math.ceil(max / step) * step;
  const sx = (v: number) => x0 + M.left + (v / xmax) * pw;
  const sy = (p: number) => y0 + M.top + (1 - p) * ph;
  const out: string[] = [];
  out.push(`<text x="${x0 + M.left}" y="${y0 + 18}" font-size="13" font-weight="bold">${esc(title)}</text>`);
  out.push(`<rect x="${x0 + M.left}" y="${y0 + M.top}" width="${pw}" height="${ph}" fill="none" stroke="#999"/>`);
  for (let v = 0; v <= xmax + 1e-9; v += step) {
    out.push(`<line x1="${sx(v)}" y1="${sy(0)}" x2="${sx(v)}" y2="${sy(1)}" stroke="#eee"/>`);
    out.push(`<text x="${sx(v)}" y="${sy(0) + 14}" font-size="10" text-anchor="middle">${Math.round(v)}</text>`);
  }
  for (const p of [0, 0.25, 0.5, 0.75, 0.95, 1]) {
    out.push(`<line x1="${sx(0)}" y1="${sy(p)}" x2="${sx(xmax)}" y2="${sy(p)}" stroke="#eee"/>`);
    out.push(`<text x="${sx(0) - 4}" y="${sy(p) + 3}" font-size="10" text-anchor="end">${p}</text>`);
  }
  out.push(`<text x="${x0 + M.left + pw / 2}" y="${y0 + H - 6}" font-size="11" text-anchor="middle">ms (BIRD log time - health flip)</text>`);
  curves.forEach((f, i) => {
    const xs = [...(f.samples ?? [])].sort((a, b) => a - b);
    const color = COLORS[f.system] ?? '#555';
    const pts: string[] = [`${sx(0).toFixed(1)},${sy(0).toFixed(1)}`];
    xs.forEach((v, k) => {
      pts.push(`${sx(v).toFixed(1)},${sy(k / xs.length).toFixed(1)}`);
      pts.push(`${sx(v).toFixed(1)},${sy((k + 1) / xs.length).toFixed(1)}`);
    });
    out.push(`<polyline fill="none" stroke="${color}" stroke-width="1.8" points="${pts.join(' ')}"/>`);
    const s = f.spread;
    const ly = y0 + M.top + ph - 30 + i * 14;
    out.push(`<line x1="${sx(xmax) - 210}" y1="${ly - 4}" x2="${sx(xmax) - 196}" y2="${ly - 4}" stroke="${color}" stroke-width="2"/>`);
    out.push(`<text x="${sx(xmax) - 192}" y="${ly}" font-size="10">${esc(LABELS[f.system] ?? f.system)}: p50 ${Math.round(s.p50)} p95 ${Math.round(s.p95)} p99 ${Math.round(s.p99)} (n=${s.n})</text>`);
  });
  return out.join('\n');
}

/** CDF panels, two per row, for figures grouped by scenario + name. */
export function drawCdfs(figures: Figure[]): string {
  const groups = new Map<string, Figure[]>();
  for (const f of figures) {
    const key = `${f.scenario}: ${f.name}`;
    groups.set(key, [...(groups.get(key) ?? []), f].sort((a, b) => a.system.localeCompare(b.system)).reverse());
  }
  const cols = 2;
  const rows = Math.ceil(groups.size / cols);
  const parts: string[] = [];
  [...groups.entries()].forEach(([title, curves], i) => {
    parts.push(panel(title, curves, (i % cols) * W, Math.floor(i / cols) * H));
  });
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${cols * W}" height="${rows * H}" viewBox="0 0 ${cols * W} ${rows * H}" font-family="sans-serif">
<rect width="100%" height="100%" fill="white"/>
${parts.join('\n')}
</svg>
`;
}
