/**
 * The addresses NAT rules DNAT to: bgp.local_ip for its family; for a family it doesn't cover, the address facing the
 * first peer of that family, or the default gateway of that family (gocast's discovery). The daemon finds them once per
 * config generation; `vipcast validate` asks the same question to warn about apps whose NAT can't work on this host.
 * Light on purpose (no gRPC, no pino): validate loads it.
 */
import type { VipcastConfig } from '../config-types.js';
import type { Logger } from '../logger.js';
import { localIpFor, resolveDefaultGateway } from '../../plugins/routing/gobgp/net.js';

/** The NAT targets: bgp.local_ip when set, else what was found facing a peer or the default gateway. */
export interface LocalAddresses {
  v4(): string | undefined;
  v6(): string | undefined;
}

type Family = 'ipv4' | 'ipv6';

/** Found once; a failure leaves that family without a NAT target, which setNat reports per app. */
export async function discoverLocalAddresses(config: VipcastConfig, log?: Logger): Promise<LocalAddresses> {
  const found: { v4?: string; v6?: string } = {};
  // Both families at once (each is one or two `ip` runs): start-up and `vipcast validate` wait for the slower only.
  await Promise.all((['ipv4', 'ipv6'] as const).map(async (family) => {
    if (config.bgp.localIp && config.bgp.localIp.includes(':') === (family === 'ipv6')) return;
    const peer = config.bgp.peers.find((p) => p.address !== undefined && p.address.includes(':') === (family === 'ipv6'))?.address;
    try {
      const addr = await localIpFor(peer ?? (await resolveDefaultGateway(family)));
      if (family === 'ipv4') found.v4 = addr;
      else found.v6 = addr;
    } catch (err) {
      log?.debug({ err, family }, 'no local address found for NAT rules of this family');
    }
  }));
  return { v4: () => found.v4, v6: () => found.v6 };
}

/**
 * `vipcast validate`: one warning per app with NAT rules for a VIP family this host has no local address of to DNAT
 * to (the daemon would fail that app and not announce it). A warning, not an error: validate may run on another host
 * than the one the config is for.
 */
export async function natWarnings(config: VipcastConfig): Promise<string[]> {
  const needs = (family: Family) => config.apps.some((a) => a.nats.length > 0 && a.vips.some((v) => v.family === family));
  if (!needs('ipv4') && !needs('ipv6')) return [];
  const local = await discoverLocalAddresses(config);
  const target = (family: Family): string | undefined => {
    const set = config.bgp.localIp;
    if (set && set.includes(':') === (family === 'ipv6')) return set;
    return family === 'ipv4' ? local.v4() : local.v6();
  };
  const out: string[] = [];
  config.apps.forEach((app, i) => {
    if (app.nats.length === 0) return;
    for (const family of ['ipv4', 'ipv6'] as const) {
      const vips = app.vips.filter((v) => v.family === family).map((v) => v.text);
      if (vips.length === 0 || target(family) !== undefined) continue;
      out.push(`apps[${i}].nats: app "${app.name}" has NAT rules for ${family} VIP ${vips.join(', ')}, but this host has no local ${family} address to DNAT to (bgp.local_ip is not ${family}, and none faces an ${family} peer or default gateway): vipcast would report this app failed and not announce it (checked on this host; the target host may differ)`);
    }
  });
  return out;
}
