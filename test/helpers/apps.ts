/** Build validated AppSpecs for tests, through the same parsers the config uses. */
import type { AppSpec, CheckResult, MonitorSpec } from '../../src/plugin-api.js';
import { MonitorRegistry } from '../../src/core/monitor-registry.js';
import { parseCommunity, parseNat, parsePrefix } from '../../src/core/values.js';
import type { CheckRunner } from '../../src/core/health.js';

const monitors = new MonitorRegistry();

export function makeApp(name: string, opts: { vips?: string[]; monitors?: string[]; communities?: string[]; nats?: string[]; rise?: number; fall?: number; intervalMs?: number; timeoutMs?: number; source?: string } = {}): AppSpec {
  return {
    name,
    source: opts.source ?? 'config',
    vips: (opts.vips ?? ['198.18.10.1/32']).map((v) => parsePrefix(v, 'vip')),
    communities: (opts.communities ?? []).map((c) => parseCommunity(c, 'c')),
    monitors: (opts.monitors ?? []).map((m) => monitors.parse(m, { path: 'm', baseDir: '.', trusted: true })),
    nats: (opts.nats ?? []).map((n) => parseNat(n, 'n')),
    rise: opts.rise ?? 1,
    fall: opts.fall ?? 1,
    intervalMs: opts.intervalMs ?? 20,
    timeoutMs: opts.timeoutMs ?? 1000,
  };
}

/** A CheckRunner whose answers the test sets by monitor text (`port:tcp:1001` -> true/false). Default: fail. */
export class ScriptedRunner implements CheckRunner {
  readonly answers = new Map<string, boolean>();
  calls = 0;
  readonly inFlight = new Map<string, number>();
  maxOverlap = 0;
  delayMs = 0;

  set(monitor: string, ok: boolean): void {
    this.answers.set(monitor, ok);
  }

  async run(spec: MonitorSpec): Promise<CheckResult & { durationMs: number }> {
    this.calls++;
    const n = (this.inFlight.get(spec.text) ?? 0) + 1;
    this.inFlight.set(spec.text, n);
    this.maxOverlap = Math.max(this.maxOverlap, n);
    if (this.delayMs) await new Promise((r) => setTimeout(r, this.delayMs));
    this.inFlight.set(spec.text, (this.inFlight.get(spec.text) ?? 1) - 1);
    const ok = this.answers.get(spec.text) ?? false;
    return { ok, reason: ok ? 'scripted pass' : 'scripted failure', durationMs: this.delayMs };
  }
}
