/**
 * Consul discovery (gocast compatible): the services of this host's Consul node tagged `enable_gocast` become apps
 * (source 'consul').
 *
 * - On only with agent.consul_addr AND env CONSUL_NODE (gocast); `ConsulDiscovery.disabledReason` says why not.
 * - Token: agent.consulToken, where config.ts has already applied CONSUL_TOKEN (non-empty env wins); sent as
 *   X-Consul-Token, never logged.
 * - `GET {addr}/catalog/node/{CONSUL_NODE}` (+ `stale` when CONSUL_STALE=true) as a blocking query: `index` = the
 *   last X-Consul-Index, `wait` = consul_query_interval (capped at 5 min), so a change arrives within milliseconds and
 *   an idle catalog costs one request per interval. HTTP timeout: 10 s (gocast) beyond the wait.
 * - Errors (unreachable, timeout, 403, 5xx, bad JSON) are logged and retried with backoff (1 s doubling, at most
 *   30 s or the query interval); the last known apps stay: routes are never dropped because Consul is briefly away.
 * - Tags: `enable_gocast` (required), `gocast_vip=` (required; several tags: the last wins, as gocast; several VIPs
 *   for one service go comma-separated in that one tag: `gocast_vip=198.18.0.1/32,2001:db8::1/128`),
 *   `gocast_vip_communities=a:b,c:d` (repeatable, concatenated), `gocast_monitor=` and `gocast_nat=` (repeatable).
 *   Built by appFromRegistration (untrusted: exec monitors refused). A service with a bad tag is skipped with one
 *   log line naming the service and the tag; the others still apply.
 * - A service gone from the catalog (or untagged) is removed; a node unknown to Consul (`null`) has no services.
 *
 * Plain fetch, not the `consul` npm package: a blocking query needs the raw X-Consul-Index header, an AbortSignal
 * for close() and our own timeout and status handling, and the worker-side monitor uses fetch too.
 */
import type { AppSpec, ConsulSettings, Discovery } from '../../../plugin-api.js';
import type { AgentConfig } from '../../../core/config-types.js';
import type { Logger } from '../../../core/logger.js';
import type { MonitorRegistry } from '../../../core/monitor-registry.js';
import { appFromRegistration, type RegistrationInput } from '../../../core/registration.js';
import { errorDetails, VipcastError } from '../../../core/errors.js';

export const HTTP_TIMEOUT_MS = 10_000;
export const MAX_WAIT_MS = 5 * 60_000;
const MIN_BACKOFF_MS = 1000;
const MAX_BACKOFF_MS = 30_000;
/** Two catalog reads are at least this far apart (Consul may answer a blocking query early). */
const MIN_GAP_MS = 50;

export interface ConsulService {
  ID?: string;
  Service?: string;
  Tags?: string[] | null;
  Address?: string;
  Port?: number;
}

export interface ConsulDiscoveryOptions {
  readonly agent: AgentConfig;
  readonly monitors: MonitorRegistry;
  readonly consul: ConsulSettings;
  readonly log: Logger;
  /** Test hooks. */
  readonly minBackoffMs?: number;
}

/** Registration parameters from one service's tags, or a problem naming the tag. */
export function tagsToRegistration(service: string, tags: readonly string[]): { input?: RegistrationInput; skip?: string; origin: Map<string, string> } {
  const origin = new Map<string, string>();
  if (!tags.includes('enable_gocast')) return { skip: 'no enable_gocast tag', origin };
  let vip: string | undefined;
  const comms: string[] = [];
  const monitor: string[] = [];
  const nat: string[] = [];
  for (const tag of tags) {
    const eq = tag.indexOf('=');
    if (eq === -1) continue;
    const key = tag.slice(0, eq);
    const value = tag.slice(eq + 1);
    if (key === 'gocast_vip') {
      vip = value;
      origin.set('vip', tag);
    } else if (key === 'gocast_vip_communities') {
      for (const c of value.split(',').map((s) => s.trim()).filter((s) => s !== '')) {
        origin.set(`vip_communities[${comms.length}]`, tag);
        comms.push(c);
      }
    } else if (key === 'gocast_monitor') {
      origin.set(`monitor[${monitor.length}]`, tag);
      monitor.push(value);
    } else if (key === 'gocast_nat') {
      origin.set(`nat[${nat.length}]`, tag);
      nat.push(value);
    }
  }
  if (vip === undefined) return { skip: 'tag gocast_vip= is missing', origin };
  return { input: { name: service, vip, vip_communities: comms, monitor, nat }, origin };
}

export class ConsulDiscovery implements Discovery {
  readonly name = 'consul';
  private current: readonly AppSpec[] = [];
  private services: ConsulService[] | undefined;
  private onChange: ((apps: readonly AppSpec[]) => void) | undefined;
  private readonly abort = new AbortController();
  private loop: Promise<void> | undefined;
  private index = 0;
  private failures = 0;
  /** Skip reasons logged for the current catalog, so a re-read of the same catalog doesn't log them again. */
  private logged = new Set<string>();
  private agent: AgentConfig;
  private monitors: MonitorRegistry;
  /** Successful catalog reads and failures, for tests and /status. */
  readonly stats = { polls: 0, errors: 0, lastError: '' };

  constructor(private readonly opts: ConsulDiscoveryOptions) {
    this.agent = opts.agent;
    this.monitors = opts.monitors;
  }

  /** Why Consul discovery is off for these settings, or undefined when it is on. */
  static disabledReason(consul: ConsulSettings): string | undefined {
    if (!consul.addr) return 'agent.consul_addr is not set';
    if (!consul.node) return 'the CONSUL_NODE environment variable is not set';
    return undefined;
  }

  /** Same Consul endpoint and identity (a reload with these unchanged keeps the running discovery). */
  static sameSettings(a: ConsulSettings, b: ConsulSettings): boolean {
    return a.addr === b.addr && a.token === b.token && a.node === b.node && a.stale === b.stale;
  }

  get settings(): ConsulSettings {
    return this.opts.consul;
  }

  /** The consul_query_interval this discovery was built with. */
  get queryIntervalMs(): number {
    return this.opts.agent.consulQueryIntervalMs;
  }

  async start(onChange: (apps: readonly AppSpec[]) => void): Promise<void> {
    this.onChange = onChange;
    const why = ConsulDiscovery.disabledReason(this.opts.consul);
    if (why) throw new VipcastError('VIPCAST_ERR_CONFIG', `Consul discovery is off: ${why}`);
    this.opts.log.info({ consul_addr: this.opts.consul.addr, node: this.opts.consul.node, stale: this.opts.consul.stale, token: this.opts.consul.token ? 'set' : 'none' }, 'Consul discovery started');
    this.loop = this.run();
  }

  apps(): readonly AppSpec[] {
    return this.current;
  }

  /** A reload changed agent defaults (rise, fall, interval, timeout) or the monitor plugins: rebuild from the last catalog. */
  update(agent: AgentConfig, monitors: MonitorRegistry): void {
    this.agent = agent;
    this.monitors = monitors;
    if (this.services) this.apply(this.services, true);
  }

  async close(): Promise<void> {
    this.abort.abort();
    await this.loop;
  }

  private get waitMs(): number {
    return Math.min(Math.max(this.agent.consulQueryIntervalMs, 1000), MAX_WAIT_MS);
  }

  private async run(): Promise<void> {
    const signal = this.abort.signal;
    while (!signal.aborted) {
      const started = performance.now();
      let delay = MIN_GAP_MS;
      try {
        await this.poll(signal);
        this.failures = 0;
      } catch (err) {
        if (signal.aborted) break;
        this.failures++;
        this.stats.errors++;
        const min = this.opts.minBackoffMs ?? MIN_BACKOFF_MS;
        delay = Math.min(min * 2 ** (this.failures - 1), Math.max(min, Math.min(MAX_BACKOFF_MS, this.agent.consulQueryIntervalMs)));
        const message = (err as Error).message;
        this.stats.lastError = message;
        this.opts.log.error({ consul_addr: this.opts.consul.addr, node: this.opts.consul.node, failures: this.failures, retry_in_ms: delay, apps_kept: this.current.length },
          `Consul catalog read failed: ${message}; keeping the last known apps`);
        // A failure resets the blocking index: the next read answers at once.
        this.index = 0;
      }
      const left = delay - (performance.now() - started);
      if (left > 0) await sleep(left, signal);
    }
  }

  private async poll(signal: AbortSignal): Promise<void> {
    const { addr, node, token, stale } = this.opts.consul;
    const query = new URLSearchParams();
    if (this.index > 0) {
      query.set('index', String(this.index));
      query.set('wait', `${Math.ceil(this.waitMs / 1000)}s`);
    }
    let url = `${addr}/catalog/node/${encodeURIComponent(node)}`;
    const qs = query.toString();
    if (qs || stale) url += `?${qs}${stale ? `${qs ? '&' : ''}stale` : ''}`;
    const headers: Record<string, string> = { accept: 'application/json' };
    if (token) headers['X-Consul-Token'] = token;
    // Consul adds up to wait/16 of jitter to a blocking query.
    const timeoutMs = (this.index > 0 ? this.waitMs + Math.ceil(this.waitMs / 16) : 0) + HTTP_TIMEOUT_MS;
    const timeout = AbortSignal.timeout(timeoutMs);
    let res: Response;
    let text: string;
    try {
      res = await fetch(url, { headers, signal: AbortSignal.any([signal, timeout]) });
      text = await res.text();
    } catch (err) {
      if (timeout.aborted && !signal.aborted) throw new Error(`no answer within ${timeoutMs} ms`);
      const e = err as Error & { cause?: { code?: string; message?: string } };
      throw new Error(`${e.cause?.code ?? e.cause?.message ?? e.message}`);
    }
    if (res.status === 403) {
      throw new Error(`403 ${oneLine(text)}: the Consul ACL token (agent.consul_token / CONSUL_TOKEN, ${token ? 'set' : 'not set'}) may not read node "${node}"`);
    }
    if (res.status !== 200) throw new Error(`HTTP ${res.status} ${oneLine(text)}`);
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch {
      throw new Error(`invalid JSON from ${addr}/catalog/node/${node}`);
    }
    let services: ConsulService[];
    if (body === null) {
      services = [];
    } else if (typeof body === 'object' && !Array.isArray(body)) {
      const map = (body as { Services?: unknown }).Services;
      if (map !== null && map !== undefined && (typeof map !== 'object' || Array.isArray(map))) throw new Error('"Services" is not a map');
      services = Object.values((map ?? {}) as Record<string, ConsulService>).filter((s) => s !== null && typeof s === 'object');
    } else {
      throw new Error('the answer is not a node object');
    }
    const idx = Number(res.headers.get('x-consul-index'));
    // Consul: an index that goes backwards (or is not positive) resets the blocking query.
    this.index = Number.isSafeInteger(idx) && idx > 0 && idx >= this.index ? idx : 0;
    this.stats.polls++;
    if (body === null && this.services?.length !== 0) {
      this.opts.log.warn({ node }, `Consul knows no node "${node}" (CONSUL_NODE): no Consul apps`);
    }
    this.apply(services, false);
  }

  private apply(services: ConsulService[], force: boolean): void {
    this.services = services;
    const apps: AppSpec[] = [];
    const seen = new Set<string>();
    const logged = new Set<string>();
    const note = (key: string, fields: Record<string, unknown>, msg: string): void => {
      logged.add(key);
      if (!this.logged.has(key)) this.opts.log.error(fields, msg);
    };
    for (const svc of services) {
      const name = String(svc.Service ?? '');
      const tags = Array.isArray(svc.Tags) ? svc.Tags.map(String) : [];
      const { input, skip, origin } = tagsToRegistration(name, tags);
      if (!input) {
        if (skip !== 'no enable_gocast tag') note(`${name}|${skip}`, { service: name, service_id: svc.ID }, `Consul service "${name}" skipped: ${skip}`);
        continue;
      }
      if (seen.has(name)) {
        note(`${name}|dup`, { service: name, service_id: svc.ID }, `Consul service "${name}" skipped: another instance (ID) of it on this node is already used`);
        continue;
      }
      try {
        apps.push(appFromRegistration(input, 'consul', this.agent, this.monitors, this.opts.consul));
        seen.add(name);
      } catch (err) {
        const details = errorDetails(err);
        for (const d of details) {
          const colon = d.indexOf(':');
          const param = colon === -1 ? '' : d.slice(0, colon);
          const tag = origin.get(param) ?? (param === 'name' ? `service name "${name}"` : undefined);
          const where = tag ? (tag.startsWith('service name') ? tag : `tag "${tag}"`) : param;
          note(`${name}|${d}`, { service: name, service_id: svc.ID, tag }, `Consul service "${name}" skipped: ${where}: ${colon === -1 ? d : d.slice(colon + 1).trim()}`);
        }
      }
    }
    this.logged = logged;
    // The first read always reports (a discovery built by a reload takes over from the old one, even with no apps).
    const changed = force || this.stats.polls === 1 || !sameApps(this.current, apps);
    this.current = Object.freeze(apps);
    if (changed) this.onChange?.(this.current);
  }
}

function sameApps(a: readonly AppSpec[], b: readonly AppSpec[]): boolean {
  const key = (x: readonly AppSpec[]): string => JSON.stringify(x.map((s) => [s.name, s.vips.map((v) => v.text), s.communities.map((c) => c.text), s.monitors.map((m) => m.text), s.nats.map((n) => n.text)]));
  return key(a) === key(b);
}

function oneLine(text: string): string {
  return text.trim().split('\n')[0]!.slice(0, 200);
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = (): void => {
      clearTimeout(timer);
      resolve();
    };
    signal.addEventListener('abort', onAbort, { once: true });
  });
}
