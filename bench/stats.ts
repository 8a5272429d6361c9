/** Small statistics helpers for the benchmarks. */
import { readdirSync, readFileSync } from 'node:fs';

export function percentile(values: number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const idx = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[idx]!;
}

/** CPU ticks (user+system, all threads) and RSS of a process, from /proc. */
export function procStats(pid: number): { cpuTicks: number; ticksPerSecond: number; rssKb: number; hwmKb: number } {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const cpuTicks = Number(fields[11]) + Number(fields[12]);
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (key: string) => Number(new RegExp(`${key}:\\s+(\\d+)`).exec(status)?.[1] ?? NaN);
  return { cpuTicks, ticksPerSecond: 100, rssKb: kb('VmRSS'), hwmKb: kb('VmHWM') };
}

/** Estimate a quantile from a Prometheus text-format histogram by linear interpolation within the bucket. */
export function histogramQuantile(text: string, name: string, labels: Record<string, string>, q: number, baseline = ''): number {
  const base = new Map(histogramBuckets(baseline, name, labels));
  const buckets = histogramBuckets(text, name, labels).map(([le, count]) => [le, count - (base.get(le) ?? 0)] as [number, number]);
  return quantileOf(buckets, q);
}

function histogramBuckets(text: string, name: string, labels: Record<string, string>): Array<[number, number]> {
  const want = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
  const buckets: Array<[number, number]> = [];
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}_bucket{`)) continue;
    if (!want.every((w) => line.includes(w))) continue;
    const le = /le="([^"]+)"/.exec(line)?.[1];
    const count = Number(line.slice(line.lastIndexOf(' ') + 1));
    if (le === undefined) continue;
    buckets.push([le === '+Inf' ? Infinity : Number(le), count]);
  }
  return buckets.sort((a, b) => a[0] - b[0]);
}

function quantileOf(buckets: Array<[number, number]>, q: number): number {
  const total = buckets.at(-1)?.[1] ?? 0;
  if (total === 0) return NaN;
  const rank = q * total;
  let prevLe = 0;
  let prevCount = 0;
  for (const [le, count] of buckets) {
    if (count >= rank) {
      if (le === Infinity) return prevLe;
      return prevLe + ((le - prevLe) * (rank - prevCount)) / Math.max(1, count - prevCount);
    }
    prevLe = le;
    prevCount = count;
  }
  return prevLe;
}

/** Summary of a sample: n, min, p50, p90, p95, p99, max, mean. */
export interface Spread {
  n: number;
  min: number;
  p50: number;
  p90: number;
  p95: number;
  p99: number;
  max: number;
  mean: number;
}

export function spread(values: number[]): Spread {
  const round = (v: number) => Math.round(v * 100) / 100;
  return {
    n: values.length,
    min: round(Math.min(...values)),
    p50: round(percentile(values, 50)),
    p90: round(percentile(values, 90)),
    p95: round(percentile(values, 95)),
    p99: round(percentile(values, 99)),
    max: round(Math.max(...values)),
    mean: round(values.reduce((a, b) => a + b, 0) / Math.max(1, values.length)),
  };
}

/**
 * CPU ticks and RSS of process trees (each root and all its descendants, read from /proc). Ticks count the children
 * a process already reaped (cutime + cstime), so short-lived check commands are included.
 */
export function treeStats(roots: number[]): { cpuTicks: number; rssKb: number; processes: number } {
  const parent = new Map<number, number>();
  const ticks = new Map<number, number>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      parent.set(Number(name), Number(f[1]));
      ticks.set(Number(name), Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]));
    } catch {
      // gone meanwhile
    }
  }
  const inTree = new Set<number>(roots.filter((p) => parent.has(p)));
  let grew = true;
  while (grew) {
    grew = false;
    for (const [pid, ppid] of parent) {
      if (!inTree.has(pid) && inTree.has(ppid)) {
        inTree.add(pid);
        grew = true;
      }
    }
  }
  let cpuTicks = 0;
  let rssKb = 0;
  for (const pid of inTree) {
    cpuTicks += ticks.get(pid) ?? 0;
    try {
      rssKb += Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0);
    } catch {
      // gone meanwhile
    }
  }
  return { cpuTicks, rssKb, processes: inTree.size };
}
