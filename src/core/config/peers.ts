/** bgp: the scalars from convict, the legacy single peer and the bgp.peers list (checked by hand). */
import type { Community, PeerSpec } from '../../plugin-api.js';
import type { BgpConfig, RoutingConfig } from '../config-types.js';
import { valueError } from '../errors.js';
import { parseAsn } from '../values.js';
import { Problems } from './problems.js';
import { DRY_RUN_LOCAL_AS, MAX_MD5_LENGTH, address, boolean, communities, describe } from './value-checks.js';
import { mapping } from './schema.js';
import type { Get } from './scalars.js';

/** Parse one peer; its address is returned even when other keys are bad, so duplicates are still found. */
function parsePeer(raw: Record<string, unknown>, path: string, env: NodeJS.ProcessEnv, problems: Problems): { peer?: PeerSpec; address?: string } {
  const start = problems.list.length;
  const addr = raw.peer_ip === undefined ? undefined : problems.try(`${path}.peer_ip`, () => address(raw.peer_ip, `${path}.peer_ip`));
  const asn = peerAsn(raw, path, problems, `${path}: missing peer_as (every peer needs its AS; gocast also wrote remote_as)`);
  const multiHop = raw.multi_hop === undefined ? undefined : problems.try(`${path}.multi_hop`, () => boolean(raw.multi_hop, `${path}.multi_hop`));
  const comms = raw.communities === undefined ? [] : problems.try(`${path}.communities`, () => communities(raw.communities, `${path}.communities`));
  let md5Password: string | undefined;
  let md5EnvVar: string | undefined;
  if (raw.md5_password !== undefined && raw.md5_env_var !== undefined) {
    problems.add(path, 'set md5_password or md5_env_var, not both');
  } else if (raw.md5_password !== undefined) {
    md5Password = problems.try(`${path}.md5_password`, () => md5(raw.md5_password, `${path}.md5_password`, ''));
  } else if (raw.md5_env_var !== undefined) {
    const name = raw.md5_env_var;
    if (typeof name !== 'string' || !/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) {
      problems.add(`${path}.md5_env_var`, `${describe(name)} is not an environment variable name`);
    } else if (env[name] === undefined || env[name] === '') {
      problems.add(`${path}.md5_env_var`, `environment variable ${name} is ${env[name] === undefined ? 'not set' : 'empty'}`);
    } else {
      md5EnvVar = name;
      md5Password = problems.try(`${path}.md5_env_var`, () => md5(env[name], `${path}.md5_env_var`, ` (the value of ${name})`));
    }
  }
  if (problems.list.length > start || asn === undefined) return { address: addr };
  const peer: PeerSpec = Object.freeze({
    ...(addr === undefined ? {} : { address: addr }),
    asn,
    ...(multiHop === undefined ? {} : { multiHop }),
    ...(md5Password === undefined ? {} : { md5Password }),
    ...(md5EnvVar === undefined ? {} : { md5EnvVar }),
    communities: Object.freeze(comms ?? []),
  });
  return { peer, address: addr };
}

function md5(value: unknown, path: string, what: string): string {
  // The value is a secret: no message below may include it.
  if (typeof value !== 'string') throw valueError(path, `is not a string${what} (quote it)`);
  if (value === '') throw valueError(path, `is empty${what}`);
  if (value.length > MAX_MD5_LENGTH) throw valueError(path, `is longer than ${MAX_MD5_LENGTH} characters${what} (the kernel's TCP MD5 limit)`);
  if (/[\u0000-\u001f\u007f]/.test(value)) throw valueError(path, `contains control characters${what}`);
  return value;
}

/** peer_as, or gocast's alias remote_as; both set and different is an error. */
function peerAsn(raw: Record<string, unknown>, path: string, problems: Problems, missing: string | undefined): number | undefined {
  const a = raw.peer_as === undefined ? undefined : problems.try(`${path}.peer_as`, () => parseAsn(raw.peer_as, `${path}.peer_as`));
  const b = raw.remote_as === undefined ? undefined : problems.try(`${path}.remote_as`, () => parseAsn(raw.remote_as, `${path}.remote_as`));
  if (a !== undefined && b !== undefined && a !== b) {
    problems.add(`${path}.remote_as`, `${b} differs from ${path}.peer_as ${a} (remote_as is an alias of peer_as: set one)`);
    return undefined;
  }
  if (a === undefined && b === undefined && raw.peer_as === undefined && raw.remote_as === undefined && missing) problems.list.push(missing);
  return a ?? b;
}

/** bgp: scalars from convict, then the legacy single peer (first) and peers[] by hand. */
export function buildBgp(get: Get, raw: Record<string, unknown>, plugin: RoutingConfig['plugin'], env: NodeJS.ProcessEnv, problems: Problems): BgpConfig {
  const peers: PeerSpec[] = [];
  // Where each peer address ('' = default gateway) was first seen, to report duplicates.
  const seen = new Map<string, string>();
  const note = (addr: string | undefined, p: string): void => {
    const first = seen.get(addr ?? '');
    if (first) problems.add(p, `${addr ?? 'a second default-gateway peer (peer_ip unset)'} is already configured at ${first}`);
    else seen.set(addr ?? '', p);
  };
  const legacy = raw.peer_ip !== undefined || raw.peer_as !== undefined || raw.remote_as !== undefined;
  if (legacy) {
    const asn = peerAsn(raw, 'bgp', problems, 'bgp.peer_as: missing (bgp.peer_ip is set, so its peer needs an AS; gocast also wrote remote_as)');
    const addr = get<string | undefined>('bgp.peer_ip');
    if (raw.peer_ip === undefined || addr !== undefined) note(addr, addr === undefined ? 'bgp.peer_as' : 'bgp.peer_ip');
    if (asn !== undefined && (raw.peer_ip === undefined || addr !== undefined)) {
      peers.push(Object.freeze({ ...(addr === undefined ? {} : { address: addr }), asn, communities: Object.freeze([]) }));
    }
  }
  if (raw.peers !== undefined && !Array.isArray(raw.peers)) problems.add('bgp.peers', `${describe(raw.peers)} is not a list of peers`);
  const listed: unknown[] = Array.isArray(raw.peers) ? raw.peers : [];
  listed.forEach((item, i) => {
    const p = `bgp.peers[${i}]`;
    if (item === null || typeof item !== 'object' || Array.isArray(item)) {
      problems.add(p, `${describe(item)} is not a peer (write "- peer_ip: 198.18.0.1" and "  peer_as: 65000")`);
      return;
    }
    const fields = mapping(item, p, 'bgp.peers[]', problems) ?? {};
    const { peer, address: addr } = parsePeer(fields, p, env, problems);
    if (addr !== undefined || fields.peer_ip === undefined) note(addr, fields.peer_ip === undefined ? p : `${p}.peer_ip`);
    if (peer) peers.push(peer);
  });

  let localAs = get<number | undefined>('bgp.local_as');
  if (plugin === 'gobgp') {
    if (raw.local_as === undefined) problems.add('bgp.local_as', 'missing (required with routing.plugin gobgp)');
    if (!legacy && listed.length === 0) {
      problems.add('bgp', 'no BGP peer: set bgp.peer_as (the peer is the default gateway), bgp.peer_ip with bgp.peer_as, or bgp.peers[] (only routing.plugin dry-run runs without peers)');
    }
  } else if (raw.local_as === undefined) {
    localAs = DRY_RUN_LOCAL_AS;
  }
  const localIp = get<string | undefined>('bgp.local_ip');
  return Object.freeze({
    localAs: localAs!,
    ...(localIp === undefined ? {} : { localIp }),
    communities: Object.freeze(get<Community[] | undefined>('bgp.communities') ?? []),
    origin: get<BgpConfig['origin']>('bgp.origin'),
    listenPort: get<number>('bgp.listen_port'),
    nextHop: get<BgpConfig['nextHop']>('bgp.next_hop'),
    peers: Object.freeze(peers),
  });
}
