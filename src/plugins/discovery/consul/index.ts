/**
 * The built-in `consul` discovery plugin (gocast compatible): its descriptor and settings. The discovery itself is
 * ConsulDiscovery (./discovery.ts: blocking catalog reads), the catalog and its tags ./catalog.ts, HTTP
 * ../../consul-http.ts (shared with the consul monitor).
 */
import type { ConsulSettings, ConsulTlsSettings, DiscoveryPlugin } from '../../../plugin-api.js';
import { PLUGIN_API_VERSION } from '../../../plugin-api.js';
import type { Logger } from '../../../core/logger.js';
import { valueError } from '../../../core/errors.js';
import { ConsulDiscovery } from './discovery.js';

export { ConsulDiscovery, CONFIRM_DELAY_MS, HTTP_TIMEOUT_MS, MAX_WAIT_MS, READ_BURST, READ_EVERY_MS, requestTimeoutMs, type ConsulDiscoveryOptions } from './discovery.js';
export { aclPolicy, chooseInstances, tagsToRegistration, type ConsulService } from './catalog.js';

/** The built-in `consul` discovery's settings: where and as whom to read, and the blocking-query wait. */
export interface ConsulDiscoverySettings extends ConsulSettings {
  /** agent.consul_query_interval in ms. */
  readonly queryIntervalMs: number;
}

/**
 * The settings of the built-in `consul` discovery from gocast's keys: agent.consul_addr, consul_token (CONSUL_TOKEN
 * applied by the config loader), consul_query_interval, consul_namespace, consul_partition, consul_tls (their Consul
 * variables applied), env CONSUL_NODE and CONSUL_STALE. Undefined (with why) when
 * Consul discovery is off: no consul_addr, or no CONSUL_NODE.
 */
export function consulDiscoverySettings(consul: ConsulSettings, queryIntervalMs: number): { settings?: ConsulDiscoverySettings; off?: string } {
  const off = ConsulDiscovery.disabledReason(consul);
  if (off) return { off };
  return { settings: Object.freeze({ ...consul, queryIntervalMs }) };
}

/**
 * The built-in `consul` discovery. It is configured by gocast's keys (see consulDiscoverySettings), not by a
 * `discovery:` entry; parseSettings checks the shape the daemon builds from them. Logs as component 'consul'.
 */
const consulDiscovery: DiscoveryPlugin<ConsulDiscoverySettings> = {
  kind: 'discovery',
  name: 'consul',
  version: '1.0.0',
  apiVersion: `^${PLUGIN_API_VERSION}`,
  parseSettings(raw, ctx) {
    const r = (raw ?? {}) as Record<string, unknown>;
    for (const key of ['addr', 'token', 'node'] as const) {
      if (typeof r[key] !== 'string') throw valueError(`${ctx.path}.${key}`, 'is not a string');
    }
    if (typeof r.stale !== 'boolean') throw valueError(`${ctx.path}.stale`, 'is not true or false');
    if (typeof r.queryIntervalMs !== 'number' || !(r.queryIntervalMs > 0)) throw valueError(`${ctx.path}.queryIntervalMs`, 'is not a positive number of ms');
    for (const key of ['namespace', 'partition'] as const) {
      if (r[key] !== undefined && typeof r[key] !== 'string') throw valueError(`${ctx.path}.${key}`, 'is not a string');
    }
    const tls = r.tls as ConsulTlsSettings | undefined;
    if (tls !== undefined && (tls === null || typeof tls !== 'object' || (['caFile', 'certFile', 'keyFile', 'serverName', 'fingerprint'] as const).some((k) => typeof tls[k] !== 'string'))) {
      throw valueError(`${ctx.path}.tls`, 'is not { caFile, certFile, keyFile, serverName, fingerprint } (strings)');
    }
    const settings = {
      addr: r.addr as string, token: r.token as string, node: r.node as string, stale: r.stale, queryIntervalMs: r.queryIntervalMs,
      namespace: (r.namespace as string | undefined) ?? '', partition: (r.partition as string | undefined) ?? '', ...(tls ? { tls } : {}),
    };
    const off = ConsulDiscovery.disabledReason(settings);
    if (off) throw valueError(ctx.path, `Consul discovery is off: ${off}`);
    return Object.freeze(settings);
  },
  sameSettings(a, b) {
    return ConsulDiscovery.sameSettings(a, b) && a.queryIntervalMs === b.queryIntervalMs;
  },
  create(ctx) {
    const { queryIntervalMs, ...consul } = ctx.settings;
    return new ConsulDiscovery({
      consul, queryIntervalMs,
      // Already bound to component 'discovery', discovery 'consul' (daemon-discovery.ts): binding component again
      // would print the key twice in every line.
      log: ctx.log as unknown as Logger,
      build: (input) => ctx.services.appFrom({ ...input, name: input.name, vip: input.vip }, ''),
    });
  },
};

export default consulDiscovery;
