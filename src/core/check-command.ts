/**
 * `vipcast check -c FILE [APP]`: run every monitor of the config's apps (or of APP) once and print each result and
 * how long it took (the `telegraf --test` of vipcast). The config is loaded as `validate` loads it (plugin packages
 * included); the checks run in real worker threads, as the daemon runs them: a pool for the built-in checks, one worker
 * for checks that start processes, and one worker per plugin package with the daemon's memory limits and recycling
 * (daemon-check-pools.ts: a plugin's check that spins, leaks or crashes its worker never delays or re-runs another's),
 * all closed before the command ends. Nothing else: no router, no host network (no
 * route, address or NAT rule is touched), no API, no discovery source (only the file's `apps`); no daemon need run.
 */
import { performance } from 'node:perf_hooks';
import type { AppSpec, MonitorSpec } from '../plugin-api.js';
import type { VipcastConfig } from './config-types.js';
import { CheckPool } from './check-pool.js';
import { PLUGIN_MAX_STUCK, PLUGIN_RESOURCE_LIMITS } from './daemon-check-pools.js';

/** One monitor's answer. */
export interface CheckRow {
  readonly app: string;
  /** The monitor's canonical text (`port:tcp:53`); `-` for an app without monitors. */
  readonly monitor: string;
  readonly ok: boolean;
  readonly reason: string;
  /** From asking the pool to its answer, in milliseconds. */
  readonly durationMs: number;
}

/** Everything one `vipcast check` found. */
export interface CheckReport {
  readonly file: string;
  /** In config order: apps, then each app's monitors. */
  readonly results: readonly CheckRow[];
  readonly up: number;
  readonly down: number;
  /** Wall time of all the checks (they run concurrently). */
  readonly durationMs: number;
}

/** The apps `vipcast check` runs: all of the config's, or the one named; undefined when there is none of that name. */
export function selectApps(config: VipcastConfig, app?: string): readonly AppSpec[] | undefined {
  if (app === undefined) return config.apps;
  const found = config.apps.find((a) => a.name === app);
  return found === undefined ? undefined : [found];
}

/**
 * Run each monitor of `apps` once, all at once, each with its app's `timeoutMs`, on pools made for this call (see the
 * file comment) and closed before it resolves. Never rejects for a failing check: that is a row with `ok: false`.
 */
export async function runChecks(config: VipcastConfig, apps: readonly AppSpec[]): Promise<CheckReport> {
  const started = performance.now();
  const pools = new Map<string, CheckPool>();
  const pool = (spec: MonitorSpec): CheckPool => {
    const key = spec.plugin !== undefined ? `plugin:${spec.plugin}` : spec.runsCommands ? 'commands' : 'checks';
    let p = pools.get(key);
    if (p === undefined) {
      p = spec.plugin !== undefined
        ? new CheckPool({ workers: 1, plugin: spec.plugin, resourceLimits: PLUGIN_RESOURCE_LIMITS, maxStuckChecks: PLUGIN_MAX_STUCK })
        : new CheckPool({ workers: key === 'checks' ? config.agent.checkWorkers : 1 });
      pools.set(key, p);
    }
    return p;
  };
  try {
    const rows = await Promise.all(apps.flatMap((app): Promise<CheckRow>[] => {
      if (app.monitors.length === 0) return [Promise.resolve({ app: app.name, monitor: '-', ok: true, reason: 'no monitors: always healthy', durationMs: 0 })];
      return app.monitors.map(async (spec) => {
        const r = await pool(spec).run(spec, app.timeoutMs);
        return { app: app.name, monitor: spec.text, ok: r.ok, reason: r.reason, durationMs: r.durationMs };
      });
    }));
    const up = rows.filter((r) => r.ok).length;
    return { file: config.file, results: rows, up, down: rows.length - up, durationMs: Math.round(performance.now() - started) };
  } finally {
    await Promise.all([...pools.values()].map((p) => p.close()));
  }
}

/** Longest reason shown in the table (the JSON has it whole). */
const TABLE_REASON = 160;

/** The report as an aligned table (APP, MONITOR, RESULT, MS, REASON) and a summary line. */
export function formatReport(report: CheckReport): string {
  const oneLine = (s: string): string => {
    const flat = s.replace(/\s*\n\s*/g, ' | ').trim();
    return flat.length > TABLE_REASON ? `${flat.slice(0, TABLE_REASON - 3)}...` : flat;
  };
  const head = ['APP', 'MONITOR', 'RESULT', 'MS', 'REASON'];
  const body = report.results.map((r) => [r.app, r.monitor, r.ok ? 'up' : 'down', r.durationMs.toFixed(1), oneLine(r.reason)]);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((row) => row[i]!.length)));
  const line = (row: string[]): string => row.map((c, i) => (i === row.length - 1 ? c : i === 3 ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join('  ').trimEnd();
  const n = report.results.length;
  return [line(head), ...body.map(line), '', `${n} check${n === 1 ? '' : 's'}: ${report.up} up, ${report.down} down (${report.durationMs} ms)`].join('\n');
}

/** The report as `--json` prints it: `{ file, results: [{ app, monitor, ok, result, reason, durationMs }], up, down, durationMs }`. */
export function reportJson(report: CheckReport): string {
  return JSON.stringify({ ...report, results: report.results.map((r) => ({ ...r, result: r.ok ? 'up' : 'down' })) }, null, 2);
}
