/**
 * The full lab for daemon tests: namespace "node" runs gobgpd and vipcast (the real CLI), namespace "tor" runs BIRD
 * as the peer router. BIRD (AS 65000) peers with gobgpd (AS 65001) over the veth pair; vipcast configures gobgpd over
 * its unix API socket. Routes are read with birdc.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLab, nsRun, type Lab } from './netns.js';
import { birdConfig, startBird, type Bird, type BirdBgp, type BirdRoute } from './bird.js';
import { startGobgpd, type Gobgpd } from './gobgpd.js';
import { DaemonProcess } from '../helpers/daemon.js';

export const NODE_AS = 65001;
export const TOR_AS = 65000;

export interface Stack {
  readonly lab: Lab;
  /** The second session's addresses (with `second`). */
  readonly second: { readonly node: string; readonly tor: string };
  /** Namespace names. */
  readonly node: string;
  readonly tor: string;
  readonly bird: Bird;
  readonly gobgpd: Gobgpd;
  /** Temp dir for configs, state and pid files. */
  readonly dir: string;
  /** The BIRD protocol name of the main session. */
  readonly protocol: string;
  /** A config's `bgp` and `routing` sections for this lab (YAML), plus agent state/pid/registrations files in `dir`. */
  /** `localIp: false` leaves bgp.local_ip unset: each session then uses the address facing its peer. */
  baseConfig(extraAgent?: string, opts?: { listenAddr?: string; localAs?: number; peers?: string; localIp?: boolean }): string;
  /** Write `vipcast.yaml` (or `name`) in dir; returns its path. */
  writeConfig(yaml: string, name?: string): string;
  /** Start vipcast inside the node namespace (`env` added to the test's own). */
  startVipcast(configFile: string, args?: string[], env?: NodeJS.ProcessEnv): DaemonProcess;
  /** Routes BIRD received from vipcast, optionally one prefix. */
  routes(prefix?: string): Promise<BirdRoute[]>;
  destroy(): Promise<void>;
}

export interface StackOptions {
  /** A second session: node 198.19.S.1 <-> tor 198.19.S.2 (BIRD protocol "second"), with this BIRD password. */
  second?: { password?: string };
  /** The main session accepts any peer AS (a test that changes vipcast's local AS). */
  anyPeerAs?: boolean;
  /** gobgpd's arguments for its API socket (default: the lab's). */
  gobgpdArgs?: (sock: string) => string[];
}

export async function createStack(opts: StackOptions = {}): Promise<Stack> {
  const lab = await createLab({ prefix: 'vs' });
  const dir = mkdtempSync(join(tmpdir(), 'vc-stack-'));
  const cleanups: Array<() => Promise<void>> = [() => lab.destroy(), async () => rmSync(dir, { recursive: true, force: true })];
  const daemons: DaemonProcess[] = [];
  try {
    const protocol = 'uplink';
    const S = Number(lab.ipA.split('.')[2]);
    const second = { node: `198.19.${S}.1`, tor: `198.19.${S}.2` };
    const protocols: BirdBgp[] = [
      { name: protocol, family: 'ipv4', local: lab.ipB, localAs: TOR_AS, neighbor: lab.ipA, neighborAs: opts.anyPeerAs ? 'external' : NODE_AS },
    ];
    if (opts.second) {
      // Its own /28, so the address gobgpd uses towards it (ip route get) is the one BIRD expects.
      await nsRun(lab.a, 'ip', ['addr', 'add', `${second.node}/28`, 'dev', lab.ifA]);
      await nsRun(lab.b, 'ip', ['addr', 'add', `${second.tor}/28`, 'dev', lab.ifB]);
      protocols.push({ name: 'second', family: 'ipv4', local: second.tor, localAs: TOR_AS, neighbor: second.node, neighborAs: NODE_AS, ...(opts.second.password ? { password: opts.second.password } : {}) });
    }
    const bird = await startBird({ ns: lab.b, config: () => birdConfig({ routerId: lab.ipB, protocols }) });
    cleanups.unshift(() => bird.stop());
    const gobgpd = await startGobgpd({ ns: lab.a, dir: mkdtempSync(join(dir, 'gobgpd-')), ...(opts.gobgpdArgs ? { args: opts.gobgpdArgs } : {}) });
    cleanups.unshift(() => gobgpd.stop());
    const stack: Stack = {
      lab, second, node: lab.a, tor: lab.b, bird, gobgpd, dir, protocol,
      baseConfig(extraAgent = '', o = {}) {
        return `agent:
  listen_addr: "${o.listenAddr ?? ''}"
  monitor_interval: 200ms
  state_file: ${join(dir, 'host-state.json')}
  registrations_file: ${join(dir, 'registrations.json')}
${extraAgent.includes('maintenance_state_file:') ? '' : `  maintenance_state_file: ${join(dir, 'maintenance.json')}\n`}  pid_file: ${join(dir, 'vipcast.pid')}
${extraAgent}
routing:
  plugin: gobgp
  gobgp: { address: "${gobgpd.address}" }
bgp:
  local_as: ${o.localAs ?? NODE_AS}
${o.localIp === false ? '' : `  local_ip: ${lab.ipA}\n`}  peers:
    - { peer_ip: ${lab.ipB}, peer_as: ${TOR_AS} }
${o.peers ?? ''}`;
      },
      writeConfig(yaml, name = 'vipcast.yaml') {
        const file = join(dir, name);
        writeFileSync(file, yaml);
        return file;
      },
      startVipcast(configFile, args = [], env = {}) {
        const d = new DaemonProcess(['run', '-c', configFile, ...args], { netns: lab.a, env });
        daemons.push(d);
        return d;
      },
      routes(prefix) {
        return bird.routes(protocol, prefix);
      },
      async destroy() {
        for (const d of daemons) await d.stop();
        for (const c of cleanups) await c().catch(() => undefined);
      },
    };
    return stack;
  } catch (err) {
    for (const c of cleanups) await c().catch(() => undefined);
    throw err;
  }
}

/** Route a prefix from the tor namespace to the node (BIRD keeps what it learns in its own tables, not the kernel). */
export async function routeViaNode(stack: Stack, prefix: string): Promise<void> {
  await nsRun(stack.tor, 'ip', [prefix.includes(':') ? '-6' : '-4', 'route', 'replace', prefix, 'via', prefix.includes(':') ? stack.lab.ip6A : stack.lab.ipA]);
}

/** GET a URL from inside a namespace (the daemon's API listens on the namespace's own loopback). */
export async function nsFetch(ns: string, url: string, method = 'GET'): Promise<{ status: number; body: string }> {
  const script = `fetch(process.argv[1], { method: process.argv[2] }).then(async (r) => process.stdout.write(JSON.stringify({ status: r.status, body: await r.text() })), (e) => process.stdout.write(JSON.stringify({ status: 0, body: String(e) })))`;
  return JSON.parse(await nsRun(ns, process.execPath, ['-e', script, url, method])) as { status: number; body: string };
}

/** A stack destroyed in `t.teardown` (a failing test can't leave its namespaces and daemons behind). */
export async function stackFor(t: { teardown(fn: () => unknown): void }, opts: StackOptions = {}): Promise<Stack> {
  const s = await createStack(opts);
  t.teardown(() => s.destroy());
  return s;
}
