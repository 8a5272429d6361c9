/**
 * `consul` monitor (gocast string `consul`, no argument): the app is up while Consul says its service's checks on this
 * host are passing. The app name is the Consul service name. Where the checks are read (gocast):
 * - consul_addr on localhost / 127.0.0.1 / [::1]: the local agent,
 *   `GET {addr}/agent/checks?filter=enable_gocast in ServiceTags or CheckID == "_node_maintenance"`;
 * - otherwise the catalog, two reads at once: `GET {addr}/health/checks/{service}?filter=Node == "<CONSUL_NODE>"` (Consul
 *   filters by node instead of sending every node's checks; entries of other nodes are still dropped here, as an old
 *   Consul ignores `filter`) and `GET {addr}/health/node/{CONSUL_NODE}?filter=CheckID == "_node_maintenance"` (node
 *   maintenance is a node check: /health/checks/{service} never lists it).
 * Down while the node is in Consul maintenance (`_node_maintenance`) or the service is (`_service_maintenance:<ID>`),
 * with the maintenance reason (Notes). Otherwise every check of every instance of the service on the node (all
 * Service IDs) must be "passing" ("warning" is down, as gocast). gocast used the first matching check only (an
 * arbitrary one when a service has several: Go map order); vipcast's rule is the same for the usual single check
 * and independent of order otherwise. Every request carries `ns` / `partition` when set.
 *
 * The parse context must carry the app name and the agent's Consul settings (config file, HTTP registration and
 * Consul discovery all pass them). A `consul` monitor without agent.consul_addr is a config error (gocast crashed
 * with a nil pointer). Params carry the token (the worker needs it); they are never logged, and no reason names it. A reload with other
 * Consul settings (TLS files changed on disk: a new fingerprint) parses the monitor anew, so its checks get new params.
 */
import type { ConsulTlsSettings, MonitorPlugin } from '../../../plugin-api.js';
import { PLUGIN_API_VERSION } from '../../../plugin-api.js';
import { valueError } from '../../../core/errors.js';
import { checkMonitorKeys } from '../../../core/values.js';

export interface ConsulMonitorParams {
  /** API base including /v1. */
  addr: string;
  token: string;
  node: string;
  stale: boolean;
  service: string;
  /** True: ask the local agent (/agent/checks); false: the catalog (/health/checks/{service}). */
  local: boolean;
  /** Consul Enterprise namespace / partition ('' = none). */
  namespace: string;
  partition: string;
  /** TLS file paths and their content fingerprint (never the PEM texts: params are copied for every check). */
  tls?: ConsulTlsSettings;
}

/** gocast: strings.Contains(addr, "localhost") || strings.Contains(addr, "127.0.0.1"); vipcast looks at the host only. */
export function isLocalConsul(addr: string): boolean {
  try {
    const host = new URL(addr).hostname;
    return host === 'localhost' || host === '127.0.0.1' || host === '[::1]';
  } catch {
    return false;
  }
}

const consulMonitor: MonitorPlugin = {
  kind: 'monitor',
  name: 'consul',
  version: '1.0.0',
  apiVersion: `^${PLUGIN_API_VERSION}`,
  workerModule: new URL('./check.js', import.meta.url).href,
  parse(input, ctx) {
    if (typeof input === 'string') {
      if (input.trim() !== '') throw valueError(ctx.path, `"consul:${input}": the consul monitor takes no argument (write "consul")`);
    } else {
      checkMonitorKeys(input, [], ctx.path, 'a consul monitor', 'it takes none: the app name is the Consul service');
    }
    const consul = ctx.consul;
    if (!consul || !consul.addr) throw valueError(ctx.path, 'a consul monitor needs agent.consul_addr (Consul is off)');
    if (!ctx.app) throw valueError(ctx.path, 'a consul monitor needs the app name (the Consul service name)');
    const local = isLocalConsul(consul.addr);
    if (!local && !consul.node) {
      throw valueError(ctx.path, `a consul monitor against a remote Consul (${new URL(consul.addr).host}) needs the CONSUL_NODE environment variable`);
    }
    const params: ConsulMonitorParams = {
      addr: consul.addr, token: consul.token, node: consul.node, stale: consul.stale, service: ctx.app, local,
      namespace: consul.namespace ?? '', partition: consul.partition ?? '', ...(consul.tls ? { tls: { ...consul.tls } } : {}),
    };
    return { params, text: '' };
  },
};

export default consulMonitor;
