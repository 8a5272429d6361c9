/**
 * The benchmarks' common record: every figure with its spread, by scenario and system. `npm run bench` prints one
 * table of them at the end, writes bench/results.json (machine, date, figures; the figures of scenarios not run this
 * time are kept from the last file) and draws the reaction latencies as bench/reaction-latency.svg.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, release, totalmem } from 'node:os';
import { spread, type Spread } from './stats.js';
import { drawCdfs } from './report-svg.js';

export interface Figure {
  /** Benchmark scenario (the name `npm run bench -- NAME` takes). */
  scenario: string;
  /** What is measured, e.g. "health flip -> withdrawn at BIRD". */
  name: string;
  unit: 'ms' | 's' | '%' | 'MB' | 'count';
  /** vipcast, exabgp, or another system compared. */
  system: string;
  spread: Spread;
  /** The samples themselves (latencies: for the SVG and for anyone who wants another statistic). */
  samples?: number[];
  /** Which statistics the table shows. */
  show: Array<keyof Spread>;
  note?: string;
  date: string;
}

const figures: Figure[] = [];
const raw = new Map<string, number[]>();
const scenariosRun = new Set<string>();
const loadStart = loadavg();

export function recordRun(scenario: string): void {
  scenariosRun.add(scenario);
}

/** Record a figure from its samples. `show` defaults to p50/p95/p99 for 20+ samples, else p50 (min-max). */
export function record(scenario: string, name: string, unit: Figure['unit'], system: string, samples: number[], opts: { show?: Array<keyof Spread>; note?: string; keepSamples?: boolean } = {}): void {
  if (samples.length === 0) return;
  scenariosRun.add(scenario);
  // The same figure recorded again (another round, another failure) adds samples to it.
  const key = `${scenario}\u0000${name}\u0000${system}`;
  const before = raw.get(key);
  if (before) {
    samples = [...before, ...samples];
    figures.splice(figures.findIndex((f) => `${f.scenario}\u0000${f.name}\u0000${f.system}` === key), 1);
  }
  raw.set(key, samples);
  const show = opts.show ?? (samples.length >= 20 ? ['p50', 'p95', 'p99'] : samples.length === 1 ? ['p50'] : ['p50', 'min', 'max']);
  figures.push({
    scenario, name, unit, system, spread: spread(samples), show, date: new Date().toISOString(),
    ...(opts.keepSamples ?? samples.length >= 20 ? { samples: samples.map((v) => Math.round(v * 10) / 10) } : {}),
    ...(opts.note ? { note: opts.note } : {}),
  });
}

export function machine(): Record<string, unknown> {
  const c = cpus();
  let kernel = release();
  try {
    kernel = readFileSync('/proc/version', 'utf8').split(' ').slice(0, 3).join(' ');
  } catch {
    // not Linux
  }
  return {
    cpu: c[0]?.model ?? 'unknown',
    cores: c.length,
    memory_mb: Math.round(totalmem() / 1024 / 1024),
    kernel,
    node: process.version,
    load_at_start: loadStart.map((v) => Math.round(v * 100) / 100),
    load_at_end: loadavg().map((v) => Math.round(v * 100) / 100),
  };
}

const fmt = (v: number, unit: Figure['unit']) => {
  if (!Number.isFinite(v)) return '-';
  const digits = unit === '%' || unit === 's' ? (v < 10 ? 1 : 0) : 0;
  return `${v.toFixed(digits)}`;
};

type Show = Array<keyof Spread>;
const isRange = (show: Show) => show[0] === 'p50' && show[1] === 'min';

function cell(f: Figure | undefined, show: Show): string {
  if (!f) return '';
  const s = f.spread;
  if (show.length === 1) return `${fmt(s[show[0]!], f.unit)} ${f.unit}`;
  if (isRange(show)) return `${fmt(s.p50, f.unit)} (${fmt(s.min, f.unit)}-${fmt(s.max, f.unit)}) ${f.unit}`;
  return `${show.map((k) => fmt(s[k], f.unit)).join(' / ')} ${f.unit}`;
}

function ratio(a: Figure | undefined, b: Figure | undefined, show: Show): string {
  if (!a || !b) return '';
  const keys = isRange(show) ? (['p50'] as const) : show;
  return keys.map((k) => (a.spread[k] > 0 ? `${(b.spread[k] / a.spread[k]).toFixed(1)}x` : '-')).join(' / ');
}

/** The table: one row per scenario + figure, vipcast and ExaBGP side by side, the ratio ExaBGP / vipcast. */
export function table(list: Figure[] = figures): string {
  const rows = new Map<string, Map<string, Figure>>();
  for (const f of list) {
    const key = `${f.scenario}\u0000${f.name}`;
    if (!rows.has(key)) rows.set(key, new Map());
    rows.get(key)!.set(f.system, f);
  }
  const out = ['| scenario | figure | stat | vipcast | ExaBGP healthcheck | ExaBGP / vipcast |', '| --- | --- | --- | --- | --- | --- |'];
  for (const [key, bySystem] of rows) {
    const [scenario, name] = key.split('\u0000') as [string, string];
    const v = bySystem.get('vipcast');
    const x = bySystem.get('exabgp');
    // One set of statistics per row, that of the system with the most samples (the two can differ in n).
    const any = [...bySystem.values()].sort((a, b) => b.spread.n - a.spread.n)[0]!;
    const show = any.show;
    const ns = [...bySystem.values()].map((f) => f.spread.n);
    const n = Math.min(...ns) === Math.max(...ns) ? `n=${ns[0]}` : `n=${[v, x].filter(Boolean).map((f) => f!.spread.n).join('/')}`;
    const stat = show.length === 1 ? (any.spread.n === 1 ? 'value' : `${show[0]}, ${n}`) : isRange(show) ? `median (min-max), ${n}` : `${show.join(' / ')}, ${n}`;
    out.push(`| ${scenario} | ${name} | ${stat} | ${cell(v, show)} | ${cell(x, show)} | ${ratio(v, x, show)} |`);
  }
  return out.join('\n');
}

/** Print the table, write results.json (merged with the figures of scenarios not run now) and the SVG. */
export function finish(resultsFile: string, svgFile: string): void {
  if (figures.length === 0) return;
  let kept: Figure[] = [];
  if (existsSync(resultsFile)) {
    try {
      const old = JSON.parse(readFileSync(resultsFile, 'utf8')) as { figures?: Figure[] };
      kept = (old.figures ?? []).filter((f) => !scenariosRun.has(f.scenario));
    } catch {
      kept = [];
    }
  }
  const all = [...kept, ...figures];
  console.log(`\n## Results (this run${kept.length ? `; ${kept.length} figures of other scenarios kept from ${resultsFile}` : ''})\n`);
  console.log(table(figures));
  writeFileSync(resultsFile, JSON.stringify({ machine: machine(), date: new Date().toISOString(), figures: all }, null, 1) + '\n');
  console.log(`\nwrote ${resultsFile}`);
  const curves = all.filter((f) => f.samples && f.unit === 'ms' && /^(reaction|isolation)$/.test(f.scenario));
  if (curves.length) {
    writeFileSync(svgFile, drawCdfs(curves));
    console.log(`wrote ${svgFile}`);
  }
}
