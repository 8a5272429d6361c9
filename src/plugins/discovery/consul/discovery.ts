/**
 * Consul discovery (gocast compatible): the services of this host's Consul node tagged `enable_gocast` become apps
 * (source 'consul').
 *
 * - On only with agent.consul_addr AND env CONSUL_NODE (gocast); `ConsulDiscovery.disabledReason` says why not.
 * - Token: agent.consulToken, where the config has already applied CONSUL_TOKEN (non-empty env wins); sent as
 *   X-Consul-Token, never logged. Minimum ACL policy: `node "<CONSUL_NODE>" { policy = "read" }` and
 *   `service_prefix "" { policy = "read" }` (ACL_POLICY).
 * - `GET {addr}/catalog/node/{CONSUL_NODE}` (+ `stale` when CONSUL_STALE=true) as a blocking query: `index` = the
 *   last X-Consul-Index, `wait` = consul_query_interval (capped at 5 min), so a change arrives within milliseconds and
 *   an idle catalog costs one request per interval. Consul's client rules for blocking queries are kept: an index that
 *   goes backwards resets to 0 (the next read doesn't block), index 0 is never sent as a blocking index (an answer
 *   with X-Consul-Index < 1 continues from 1), and reads are rate limited (READ_BURST back to back, then one per
 *   READ_EVERY_MS) so an index that churns costs one read a second, not a tight loop.
 * - Deadline per read: wait + wait/16 (Consul's jitter) + HTTP_TIMEOUT_MS (gocast's 10 s) for a blocking read,
 *   HTTP_TIMEOUT_MS for another (`requestTimeoutMs`). No other timeout applies (node:http, see httpGet).
 * - Errors (unreachable, timeout, 403, 5xx, bad JSON, an answer filtered by ACLs) are logged and retried with backoff
 *   (1 s doubling, at most 30 s or the query interval); the last known apps stay: routes are never dropped because
 *   Consul is briefly away or the token lost a permission. An answer with X-Consul-Results-Filtered-By-ACLs is an
 *   error even when it still lists services: what the token can't see can't be told from a removal.
 * - A drop from some apps to none (node gone, every service untagged) is only delivered when a second, non-blocking
 *   read CONFIRM_DELAY_MS later agrees; otherwise the second read's answer is used.
 * - Tags: `enable_gocast` (required), `gocast_vip=` (required; several tags: the last wins, as gocast; several VIPs
 *   for one service go comma-separated in that one tag: `gocast_vip=198.18.0.1/32,2001:db8::1/128`),
 *   `gocast_vip_communities=a:b,c:d` (repeatable, concatenated), `gocast_monitor=` and `gocast_nat=` (repeatable).
 *   Built by appFromRegistration (untrusted: exec monitors refused). A service with a bad tag is skipped with one
 *   log line naming the service and the tag; the others still apply.
 * - A service gone from the catalog (or untagged) is removed; a node unknown to Consul (`null` without the ACL
 *   header) has no services.
 *
 * - Several instances of one service name on the node (different Service IDs): the one with the lowest ID in byte
 *   order among those tagged enable_gocast is used, whatever the order of the answer's keys; the others are logged
 *   once (warn) as ignored, naming the chosen ID (catalog.ts chooseInstances).
 * - Every read carries `ns` / `partition` when set (Consul Enterprise), and goes over TLS with the agent.consul_tls
 *   files for an https consul_addr.
 *
 * HTTP through ../../consul-http.ts (node:http(s), shared with the consul monitor), not the `consul` npm package: see
 * there why.
 */
import type http from 'node:http';
import type { AppSpec, ConsulSettings, Discovery } from '../../../plugin-api.js';
import type { AgentConfig } from '../../../core/config-types.js';
import type { Logger } from '../../../core/logger.js';
import type { MonitorRegistry } from '../../../core/monitor-registry.js';
import { appFromRegistration, type RegistrationInput } from '../../../core/registration.js';
import { errorDetails, VipcastError } from '../../../core/errors.js';
import { aclPolicy, chooseInstances, sameApps, type ConsulService } from './catalog.js';
import { connectError, consulAgent, consulGet, consulHeaders, consulUrl, header, oneLine, sleep, type HttpAnswer } from '../../consul-http.js';

/** Margin beyond a blocking read's wait + jitter, and the whole deadline of a non-blocking read (gocast: 10 s). */
export const HTTP_TIMEOUT_MS = 10_000;
export const MAX_WAIT_MS = 5 * 60_000;
const MIN_BACKOFF_MS = 1000;
const MAX_BACKOFF_MS = 30_000;
/**
 * Rate limit (Consul's client rules: "rate limit when the index changes rapidly"): a token bucket of READ_BURST reads,
 * refilled with one every READ_EVERY_MS. Changes made by people or deploy tools (a few at a time) are seen at once;
 * an index that churns (older Consul wakes a node query on any catalog write; a buggy X-Consul-Index of 0) costs one
 * read a second per host instead of a tight loop (20 reads/s with the old 50 ms gap).
 */
export const READ_BURST = 10;
export const READ_EVERY_MS = 1000;
/** A drop to no apps is read again this much later before it is delivered. */
export const CONFIRM_DELAY_MS = 1000;
const FILTERED_HEADER = 'x-consul-results-filtered-by-acls';
/** A catalog answer larger than this is an error (a node's services are kilobytes). */
const MAX_BODY_BYTES = 32 * 1024 * 1024;

/**
 * The deadline of one catalog read: a blocking read waits `waitMs`, plus up to wait/16 that Consul adds to spread
 * wake-ups, plus the margin; a non-blocking read gets the margin alone.
 */
export function requestTimeoutMs(waitMs: number, blocking: boolean, marginMs = HTTP_TIMEOUT_MS): number {
  return (blocking ? waitMs + Math.ceil(waitMs / 16) : 0) + marginMs;
}

export interface ConsulDiscoveryOptions {
  /** Agent defaults and monitor types for the apps (unless `build` is given) and consul_query_interval (unless `queryIntervalMs` is). */
  readonly agent?: AgentConfig;
  readonly monitors?: MonitorRegistry;
  readonly consul: ConsulSettings;
  /** consul_query_interval in ms (the plugin's settings); default agent.consulQueryIntervalMs. */
  readonly queryIntervalMs?: number;
  /** Builds an app from a service's tags (the daemon's DiscoveryServices.appFrom: the config in force at each call). */
  readonly build?: (input: RegistrationInput) => AppSpec;
  readonly log: Logger;
  /** Test hooks. */
  readonly minBackoffMs?: number;
  readonly confirmDelayMs?: number;
  /** HTTP_TIMEOUT_MS for this instance. */
  readonly httpMarginMs?: number;
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
  /** Whether onChange was called once (the first read always reports: a discovery built by a reload takes over). */
  private reported = false;
  /** Read tokens left (see READ_BURST) and when they were last counted. */
  private tokens = READ_BURST;
  private tokensAt = performance.now();
  /** Our own connection pool: keep-alive between reads, no socket timeout of a shared agent; made at the first read (TLS files). */
  private httpAgent: http.Agent | undefined;

  /** Skip reasons logged for the current catalog, so a re-read of the same catalog doesn't log them again. */
  private logged = new Set<string>();
  private agent: AgentConfig | undefined;
  private monitors: MonitorRegistry | undefined;
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
    return a.addr === b.addr && a.token === b.token && a.node === b.node && a.stale === b.stale
      && (a.namespace ?? '') === (b.namespace ?? '') && (a.partition ?? '') === (b.partition ?? '')
      && a.tls?.fingerprint === b.tls?.fingerprint;
  }

  get settings(): ConsulSettings {
    return this.opts.consul;
  }

  /** The consul_query_interval this discovery was built with. */
  get queryIntervalMs(): number {
    return this.opts.queryIntervalMs ?? this.agent?.consulQueryIntervalMs ?? 60_000;
  }

  async start(onChange: (apps: readonly AppSpec[]) => void): Promise<void> {
    this.onChange = onChange;
    const why = ConsulDiscovery.disabledReason(this.opts.consul);
    if (why) throw new VipcastError('VIPCAST_ERR_CONFIG', `Consul discovery is off: ${why}`);
    const { addr, node, stale, token, namespace, partition, tls } = this.opts.consul;
    this.opts.log.info({ consul_addr: addr, node, stale, token: token ? 'set' : 'none', namespace: namespace || undefined, partition: partition || undefined, tls: tls ? 'set' : 'none' }, 'Consul discovery started');
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

  /** The config in force changed but not the settings (a reload): rebuild the apps from the last catalog. */
  refresh(): void {
    if (this.services) this.apply(this.services, true);
  }

  async close(): Promise<void> {
    this.abort.abort();
    await this.loop;
    this.httpAgent?.destroy();
  }

  private get waitMs(): number {
    return Math.min(Math.max(this.queryIntervalMs, 1000), MAX_WAIT_MS);
  }

  private async run(): Promise<void> {
    const signal = this.abort.signal;
    while (!signal.aborted) {
      try {
        await this.poll(signal);
        this.failures = 0;
      } catch (err) {
        if (signal.aborted) break;
        this.failures++;
        this.stats.errors++;
        const min = this.opts.minBackoffMs ?? MIN_BACKOFF_MS;
        const delay = Math.min(min * 2 ** (this.failures - 1), Math.max(min, Math.min(MAX_BACKOFF_MS, this.queryIntervalMs)));
        const message = (err as Error).message;
        this.stats.lastError = message;
        this.opts.log.error({ consul_addr: this.opts.consul.addr, node: this.opts.consul.node, failures: this.failures, retry_in_ms: delay, apps_kept: this.current.length },
          `Consul catalog read failed: ${message}; keeping the last known apps`);
        // A failure resets the blocking index: the next read answers at once.
        this.index = 0;
        await sleep(delay, signal);
      }
    }
  }

  /** One blocking read, confirmed by a second one when it would take every app away; then delivered. */
  private async poll(signal: AbortSignal): Promise<void> {
    const { node } = this.opts.consul;
    let read = await this.read(signal, this.index > 0);
    if (signal.aborted) return;
    if (this.current.length > 0 && this.build(read.services).apps.length === 0) {
      // A node re-registering, a follower behind, a token losing a service: one empty answer is not enough to
      // withdraw every route of this host.
      const delay = this.opts.confirmDelayMs ?? CONFIRM_DELAY_MS;
      const what = read.nodeKnown ? 'no tagged services' : 'no such node (null)';
      this.opts.log.warn({ node, apps_kept: this.current.length, confirm_in_ms: delay },
        `Consul answered ${what} for node "${node}"; reading again in ${delay} ms before withdrawing the Consul apps`);
      await sleep(delay, signal);
      if (signal.aborted) return;
      read = await this.read(signal, false);
      if (signal.aborted) return;
      const apps = this.build(read.services).apps.length;
      if (apps === 0) this.opts.log.warn({ node, apps_removed: this.current.length }, `Consul confirmed no apps for node "${node}" (second read); removing the Consul apps`);
      else this.opts.log.info({ node, apps }, `the empty answer for node "${node}" was not confirmed by a second read; nothing withdrawn`);
    }
    this.setIndex(read.index);
    this.stats.polls++;
    if (!read.nodeKnown && this.services?.length !== 0) {
      this.opts.log.warn({ node }, `Consul knows no node "${node}" (CONSUL_NODE): no Consul apps`);
    }
    this.apply(read.services, false);
  }

  /** Consul's rules: an index that goes backwards restarts with a non-blocking read; never block on an index < 1. */
  private setIndex(idx: number): void {
    if (idx < this.index) this.index = 0;
    else this.index = Number.isSafeInteger(idx) && idx >= 1 ? idx : 1;
  }

  /** Wait for a read token (see READ_BURST). */
  private async throttle(signal: AbortSignal): Promise<void> {
    for (;;) {
      const now = performance.now();
      this.tokens = Math.min(READ_BURST, this.tokens + (now - this.tokensAt) / READ_EVERY_MS);
      this.tokensAt = now;
      if (this.tokens >= 1 || signal.aborted) break;
      await sleep((1 - this.tokens) * READ_EVERY_MS, signal);
    }
    this.tokens -= 1;
  }

  /** One catalog read; throws on anything but a complete, unfiltered 200 with a node object or `null`. */
  private async read(signal: AbortSignal, blocking: boolean): Promise<{ services: ConsulService[]; index: number; nodeKnown: boolean }> {
    await this.throttle(signal);
    const { addr, node, token, stale } = this.opts.consul;
    const url = consulUrl(this.opts.consul, `/catalog/node/${encodeURIComponent(node)}`,
      blocking ? { index: String(this.index), wait: `${Math.ceil(this.waitMs / 1000)}s` } : {}, stale);
    // The TLS files are read here, not at construction: one unreadable now is a logged, retried read error.
    this.httpAgent ??= consulAgent(this.opts.consul);
    const timeoutMs = requestTimeoutMs(this.waitMs, blocking, this.opts.httpMarginMs);
    const timeout = AbortSignal.timeout(timeoutMs);
    let res: HttpAnswer;
    try {
      res = await consulGet(url, consulHeaders(this.opts.consul), this.httpAgent, AbortSignal.any([signal, timeout]), MAX_BODY_BYTES);
    } catch (err) {
      if (timeout.aborted && !signal.aborted) throw new Error(`no answer within ${timeoutMs} ms`);
      throw new Error(connectError(err));
    }
    const { text } = res;
    const who = `the Consul ACL token (agent.consul_token / CONSUL_TOKEN, ${token ? 'set' : 'not set'})`;
    if (res.status === 403) {
      throw new Error(`403 ${oneLine(text)}: ${who} may not read node "${node}"; it needs ${aclPolicy(node)}`);
    }
    if (res.status !== 200) throw new Error(`HTTP ${res.status} ${oneLine(text)}`);
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch {
      throw new Error(`invalid JSON from ${addr}/catalog/node/${node}`);
    }
    if (header(res, FILTERED_HEADER) === 'true') {
      // Consul answers 200 for a token it knows but that may not read something: `null` for the node, or the node
      // without the services the token can't read. Either way the apps can't be known from this answer.
      throw new Error(body === null
        ? `${who} may not read node "${node}" (Consul answered null, filtered by ACLs); it needs ${aclPolicy(node)}`
        : `Consul left out services of node "${node}" that ${who} may not read (filtered by ACLs); it needs ${aclPolicy(node)}`);
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
    const raw = header(res, 'x-consul-index');
    return { services, index: raw === undefined ? Number.NaN : Number(raw), nodeKnown: body !== null };
  }

  /** The apps of a catalog answer, and the skip reasons to log (key, fields, message). */
  private build(services: ConsulService[]): { apps: AppSpec[]; notes: Array<[string, Record<string, unknown>, string]> } {
    const apps: AppSpec[] = [];
    const notes: Array<[string, Record<string, unknown>, string]> = [];
    for (const { svc, name, input, skip, origin, others } of chooseInstances(services)) {
      if (!input) {
        if (skip !== 'no enable_gocast tag') notes.push([`${name}|${skip}`, { service: name, service_id: svc.ID }, `Consul service "${name}" skipped: ${skip}`]);
        continue;
      }
      if (others.length > 0) {
        notes.push([`${name}|instances|${svc.ID}|${others.join(',')}`, { service: name, service_id: svc.ID, ignored: others },
          `Consul service "${name}" has ${others.length + 1} tagged instances on this node: using ID "${svc.ID}" (the lowest ID), ignoring ${others.map((o) => `"${o}"`).join(', ')}`]);
      }
      try {
        apps.push(this.opts.build ? this.opts.build(input) : appFromRegistration(input, 'consul', this.agent!, this.monitors!, this.opts.consul));
      } catch (err) {
        const details = errorDetails(err);
        for (const d of details) {
          const colon = d.indexOf(':');
          const param = colon === -1 ? '' : d.slice(0, colon);
          // Several VIPs in one gocast_vip tag are parameters vip[0], vip[1]...: all from that tag.
          const tag = origin.get(param) ?? origin.get(param.replace(/\[\d+\]$/, '')) ?? (param === 'name' ? `service name "${name}"` : undefined);
          const where = tag ? (tag.startsWith('service name') ? tag : `tag "${tag}"`) : param;
          notes.push([`${name}|${d}`, { service: name, service_id: svc.ID, tag }, `Consul service "${name}" skipped: ${where}: ${colon === -1 ? d : d.slice(colon + 1).trim()}`]);
        }
      }
    }
    return { apps, notes };
  }

  private apply(services: ConsulService[], force: boolean): void {
    this.services = services;
    const { apps, notes } = this.build(services);
    const logged = new Set<string>();
    for (const [key, fields, msg] of notes) {
      if (!this.logged.has(key) && !logged.has(key)) this.opts.log[key.includes('|instances|') ? 'warn' : 'error'](fields, msg);
      logged.add(key);
    }
    this.logged = logged;
    const changed = force || !this.reported || !sameApps(this.current, apps);
    this.current = Object.freeze(apps);
    if (changed) {
      this.reported = true;
      this.onChange?.(this.current);
    }
  }
}
