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
  /** Namespace names. */
  readonly node: string;
  readonly tor: string;
  readonly bird: Bird;
  readonly gobgpd: Gobgpd;
  /** Temp dir for configs, state and pid files. */
  readonly dir: string;
  /** The BIRD protocol name of the main session. */
  readonly protocol: string;
  /** A config's `bgp` and `routing` sections for this lab (YAML), plus agent state/pid files in `dir`. */
  baseConfig(extraAgent?: string): string;
  /** Write `vipcast.yaml` (or `name`) in dir; returns its path. */
  writeConfig(yaml: string, name?: string): string;
  /** Start vipcast inside the node namespace. */
  startVipcast(configFile: string, args?: string[]): DaemonProcess;
  /** Routes BIRD received from vipcast, optionally one prefix. */
  routes(prefix?: string): Promise<BirdRoute[]>;
  destroy(): Promise<void>;
}

export async function createStack(opts: { extraProtocols?: (lab: Lab) => BirdBgp[] } = {}): Promise<Stack> {
  const lab = await createLab({ prefix: 'vs' });
  const dir = mkdtempSync(join(tmpdir(), 'vc-stack-'));
  const cleanups: Array<() => Promise<void>> = [() => lab.destroy(), async () => rmSync(dir, { recursive: true, force: true })];
  const daemons: DaemonProcess[] = [];
  try {
    const protocol = 'uplink';
    const bird = await startBird({
      ns: lab.b,
      config: () => birdConfig({
        routerId: lab.ipB,
        protocols: [
          { name: protocol, family: 'ipv4', local: lab.ipB, localAs: TOR_AS, neighbor: lab.ipA, neighborAs: NODE_AS },
          ...(opts.extraProtocols?.(lab) ?? []),
        ],
      }),
    });
    cleanups.unshift(() => bird.stop());
    const gobgpd = await startGobgpd({ ns: lab.a, dir: mkdtempSync(join(dir, 'gobgpd-')) });
    cleanups.unshift(() => gobgpd.stop());
    const stack: Stack = {
      lab, node: lab.a, tor: lab.b, bird, gobgpd, dir, protocol,
      baseConfig(extraAgent = '') {
        return `agent:
  listen_addr: ""
  monitor_interval: 200ms
  state_file: ${join(dir, 'host-state.json')}
  pid_file: ${join(dir, 'vipcast.pid')}
${extraAgent}
routing:
  plugin: gobgp
  gobgp: { address: "${gobgpd.address}" }
bgp:
  local_as: ${NODE_AS}
  local_ip: ${lab.ipA}
  peers:
    - { peer_ip: ${lab.ipB}, peer_as: ${TOR_AS} }
`;
      },
      writeConfig(yaml, name = 'vipcast.yaml') {
        const file = join(dir, name);
        writeFileSync(file, yaml);
        return file;
      },
      startVipcast(configFile, args = []) {
        const d = new DaemonProcess(['run', '-c', configFile, ...args], { netns: lab.a });
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
