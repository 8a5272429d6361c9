/** The exposure warnings of a config, logged once at start (api.ts re-exports it): no fastify, no HTTP. */
import type { VipcastConfig } from './config-types.js';
import { isLoopbackHost } from './api-auth.js';
import { splitListen } from './listen-addr.js';
import { DEFAULT_POLICY } from './prefix-policy.js';

/**
 * What the log should say about this config's exposure, once at start: an API reachable from other hosts, the
 * insecure opt-in, no prefix allowlist (not in dry-run: nothing is announced there), and a gobgpd API on TCP (any
 * local user could then read the peers' MD5 passwords and inject paths).
 */
export function exposureWarnings(config: Pick<VipcastConfig, 'agent' | 'routing'>, dryRun = false): string[] {
  const out: string[] = [];
  const { agent, routing } = config;
  if (agent.apiInsecureOpen && agent.listenAddr !== '') {
    out.push(`agent.api_insecure_open: anyone who can reach ${agent.listenAddr} may register VIPs, unregister apps, reload and set maintenance without a token`);
  } else if (agent.listenAddr !== '' && !agent.listenAddr.startsWith('unix:') && !isLoopbackHost(splitListen(agent.listenAddr).host) && agent.apiToken === '') {
    out.push(`agent.listen_addr: "${agent.listenAddr}" is reachable from other hosts and no token is configured: /register, /unregister, POST /reload and POST /maintenance answer 401 to them (only root and agent.api_allowed_users on this host may call them); set agent.api_token_file to let other hosts in`);
  }
  if (!dryRun && (agent.prefixPolicy?.allowedPrefixes.length ?? 0) === 0) {
    const p = agent.prefixPolicy ?? DEFAULT_POLICY;
    out.push(`agent.allowed_prefixes is unset: any prefix of /${p.minLengthV4} (IPv4) or /${p.minLengthV6} (IPv6) or longer outside the ranges that are never announced may be announced, from this file and from every authorized /register, Consul service and plugin; list the ranges this host may announce`);
  }
  if (!dryRun && routing.plugin === 'gobgp' && !routing.gobgp.address.startsWith('unix:')) {
    out.push(`routing.gobgp.address: "${routing.gobgp.address}" is TCP: every local user can use gobgpd's API there (read the peers' MD5 passwords, announce any route); use a unix socket only root can open (see packaging/)`);
  }
  return out;
}
