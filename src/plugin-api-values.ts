/**
 * The validated values the plugin contracts talk about (prefixes, communities, routes, BGP peers, NAT rules and their
 * bindings): types only, with no dependency, re-exported by `plugin-api.ts` (`vipcast/plugin-api`), which plugin
 * authors import; the contracts themselves (descriptors, Router, HostNetwork, Discovery, checks) live there.
 */

/** Address family of a prefix. */
export type Family = 'ipv4' | 'ipv6';

/** A validated IP prefix (host bits clear, length in range). Built only by `parsePrefix`. */
export interface Prefix {
  /** Canonical address text (IPv6 in RFC 5952 form). */
  readonly address: string;
  /** Prefix length: 0..32 for IPv4, 0..128 for IPv6. */
  readonly length: number;
  readonly family: Family;
  /** Canonical `address/length`: the identity of a route. */
  readonly text: string;
}

/** A validated BGP community: standard `a:b` (RFC 1997) or large `a:b:c` (RFC 8092). */
export type Community =
  | { readonly type: 'standard'; /** asn * 65536 + value, as sent on the wire. */ readonly value: number; readonly text: string }
  | { readonly type: 'large'; readonly global: number; readonly local1: number; readonly local2: number; readonly text: string };

/** BGP ORIGIN attribute. */
export type Origin = 'igp' | 'egp' | 'incomplete';

/** One route vipcast wants announced (or has announced). */
export interface Route {
  readonly prefix: Prefix;
  /** Name of the app this route belongs to. */
  readonly app: string;
  readonly origin: Origin;
  /** Global communities followed by the VIP's own, de-duplicated, in config order. */
  readonly communities: readonly Community[];
}

/** A NAT rule: traffic to VIP:listenPort is DNAT-ed to local_ip:targetPort. */
export interface NatRule {
  readonly protocol: 'tcp' | 'udp';
  readonly listenPort: number;
  readonly targetPort: number;
  /** Canonical gocast form `tcp:53:8053`. */
  readonly text: string;
}

/** A BGP peer, validated. */
export interface PeerSpec {
  /** Peer address; undefined means "the default gateway", resolved by the router. */
  readonly address?: string;
  readonly asn: number;
  /** undefined = eBGP multihop (TTL 255) when the AS differ; false = never; true = always. */
  readonly multiHop?: boolean;
  /** MD5 password, resolved from `md5_password` or the env var named by `md5_env_var`. Never logged. */
  readonly md5Password?: string;
  readonly md5EnvVar?: string;
  readonly communities: readonly Community[];
}

/** State of one BGP session, for the API. Never carries a password. */
export interface PeerState {
  readonly address: string;
  readonly asn: number;
  readonly state: string;
  /** Seconds since the session was established, 0 when not established. */
  readonly uptimeSeconds: number;
  readonly prefixesSent: number;
  readonly prefixesReceived: number;
}

/** An address vipcast keeps on the loopback interface for an app. */
export interface VipBinding {
  readonly app: string;
  readonly prefix: Prefix;
}

/** One NAT rule bound to a VIP. */
export interface NatBinding {
  readonly app: string;
  readonly vip: Prefix;
  readonly rule: NatRule;
}
