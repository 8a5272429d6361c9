/** Consul discovery's catalog: a node's services, their gocast tags as registration parameters, the ACL policy. */
import type { AppSpec } from '../../../plugin-api.js';
import type { RegistrationInput } from '../../../core/registration.js';

/** The minimum ACL policy of the token for this node (named in every ACL error). */
export function aclPolicy(node: string): string {
  return `node ${JSON.stringify(node)} { policy = "read" } and service_prefix "" { policy = "read" }`;
}

export interface ConsulService {
  ID?: string;
  Service?: string;
  Tags?: string[] | null;
  Address?: string;
  Port?: number;
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

/** Whether two app lists are the same apps (names, VIPs, communities, monitors, NATs). */
export function sameApps(a: readonly AppSpec[], b: readonly AppSpec[]): boolean {
  const key = (x: readonly AppSpec[]): string => JSON.stringify(x.map((s) => [s.name, s.vips.map((v) => v.text), s.communities.map((c) => c.text), s.monitors.map((m) => m.text), s.nats.map((n) => n.text)]));
  return key(a) === key(b);
}
