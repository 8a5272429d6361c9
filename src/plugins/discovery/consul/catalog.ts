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

/** Byte order of the UTF-8 forms (Go's string order, which Consul sorts by): not UTF-16 code-unit order. */
export function byteOrder(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

export interface ChosenInstance {
  svc: ConsulService;
  name: string;
  input?: RegistrationInput;
  skip?: string;
  origin: Map<string, string>;
  /** IDs of the other instances of the name tagged enable_gocast: ignored. */
  others: string[];
}

/**
 * One instance per service name, whatever the order of the catalog's keys: several instances of one service on a
 * node (different Service IDs) are one app, from the instance with the lowest ID in byte order among those tagged
 * `enable_gocast`; the other tagged ones are ignored (named in `others`). A name without a tagged instance comes back
 * once, skipped ('no enable_gocast tag'). Ordered by the chosen ID.
 */
export function chooseInstances(services: readonly ConsulService[]): ChosenInstance[] {
  const sorted = [...services].sort((a, b) => byteOrder(String(a.ID ?? a.Service ?? ''), String(b.ID ?? b.Service ?? '')));
  const byName = new Map<string, ConsulService[]>();
  for (const svc of sorted) {
    const name = String(svc.Service ?? '');
    const list = byName.get(name) ?? [];
    list.push(svc);
    byName.set(name, list);
  }
  const out: ChosenInstance[] = [];
  for (const [name, list] of byName) {
    const tags = (svc: ConsulService): string[] => (Array.isArray(svc.Tags) ? svc.Tags.map(String) : []);
    const tagged = list.filter((svc) => tags(svc).includes('enable_gocast'));
    const svc = tagged[0] ?? list[0]!;
    const others = tagged.slice(1).map((o) => String(o.ID ?? ''));
    out.push({ svc, name, ...tagsToRegistration(name, tags(svc)), others });
  }
  return out.sort((a, b) => byteOrder(String(a.svc.ID ?? a.name), String(b.svc.ID ?? b.name)));
}

/** Whether two app lists are the same apps (names, VIPs, communities, monitors, NATs). */
export function sameApps(a: readonly AppSpec[], b: readonly AppSpec[]): boolean {
  const key = (x: readonly AppSpec[]): string => JSON.stringify(x.map((s) => [s.name, s.vips.map((v) => v.text), s.communities.map((c) => c.text), s.monitors.map((m) => m.text), s.nats.map((n) => n.text)]));
  return key(a) === key(b);
}
