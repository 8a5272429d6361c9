/**
 * gocast's peer discovery: an unset peer address is the default gateway; an unset local address is the address the
 * kernel would use to reach the peer. Both come from `ip -j route` (execFile, no shell).
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { parseAddress } from '../../../core/values.js';
import { VipcastError } from '../../../core/errors.js';

const pexec = promisify(execFile);

/** Runs `ip` with these arguments and returns its stdout. Tests substitute one that runs inside a namespace. */
export type IpRunner = (args: string[]) => Promise<string>;

export const runIp: IpRunner = async (args) => {
  try {
    const { stdout } = await pexec('ip', args, { timeout: 5000 });
    return stdout;
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new VipcastError('VIPCAST_ERR_ROUTER', `ip ${args.join(' ')} failed: ${e.stderr?.trim() || e.message}`, { cause: err });
  }
};

interface IpRoute { dst?: string; gateway?: string; prefsrc?: string; dev?: string; type?: string }

function parseJson(text: string, what: string): IpRoute[] {
  try {
    const v = JSON.parse(text) as unknown;
    return Array.isArray(v) ? (v as IpRoute[]) : [];
  } catch (err) {
    throw new VipcastError('VIPCAST_ERR_ROUTER', `cannot parse the output of ${what}`, { cause: err });
  }
}

/** The default gateway (IPv4 unless `family` says otherwise): gocast's peer when `peer_ip` is unset. */
export async function resolveDefaultGateway(family: 'ipv4' | 'ipv6' = 'ipv4', run: IpRunner = runIp): Promise<string> {
  const args = family === 'ipv6' ? ['-6', '-j', 'route', 'show', 'default'] : ['-4', '-j', 'route', 'show', 'default'];
  const routes = parseJson(await run(args), `ip ${args.join(' ')}`);
  for (const r of routes) {
    if (r.gateway) return parseAddress(r.gateway, 'default gateway').address;
  }
  throw new VipcastError('VIPCAST_ERR_ROUTER', `no ${family} default gateway to use as the BGP peer: set bgp.peer_ip or bgp.peers[].peer_ip`);
}

/** The local address the kernel uses towards `peer` (the `src` of `ip route get`): gocast's local_ip discovery. */
export async function localIpFor(peer: string, run: IpRunner = runIp): Promise<string> {
  const addr = parseAddress(peer, 'peer address').address;
  const args = ['-j', 'route', 'get', addr];
  const routes = parseJson(await run(args), `ip ${args.join(' ')}`);
  const src = routes.find((r) => r.prefsrc)?.prefsrc;
  if (!src) throw new VipcastError('VIPCAST_ERR_ROUTER', `no local address towards ${addr} (ip route get has no src): set bgp.local_ip`);
  return parseAddress(src, 'local address').address;
}
