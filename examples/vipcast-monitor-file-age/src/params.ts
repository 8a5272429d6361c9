/** What `parse` gives the check (through a structured clone): plain data only. */
export interface FileAgeParams {
  /** Absolute path of the file to watch. */
  readonly path: string;
  /** Up while the file was modified at most this long ago. */
  readonly maxAgeMs: number;
}

const UNITS: Readonly<Record<string, number>> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/**
 * A duration as the config writes it (`500ms`, `30s`, `5m`, `1h`; a bare number is milliseconds) in milliseconds.
 * Throws an Error whose message starts with `path`.
 */
export function parseDuration(value: unknown, path: string): number {
  const text = typeof value === 'number' ? `${value}ms` : value;
  const m = typeof text === 'string' ? /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)\s*$/.exec(text) : null;
  const ms = m ? Number(m[1]) * UNITS[m[2]!]! : NaN;
  if (!(ms > 0) || !Number.isFinite(ms)) throw new Error(`${path}: ${JSON.stringify(value)} is not a duration (e.g. 30s, 5m, 1h)`);
  return Math.round(ms);
}

/** A duration in the largest unit that divides it (`30s`, `90s`, `5m`), the form `parse` puts in the monitor's text. */
export function formatDuration(ms: number): string {
  for (const [unit, size] of [['h', 3_600_000], ['m', 60_000], ['s', 1000]] as const) {
    if (ms % size === 0) return `${ms / size}${unit}`;
  }
  return `${ms}ms`;
}
