/** Small statistics helpers for the benchmarks. */
import { readFileSync } from 'node:fs';

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
