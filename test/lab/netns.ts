/**
 * Test lab: network namespaces joined by veth pairs, created and destroyed by the tests themselves.
 * Addresses come from 198.18.0.0/15 and 2001:db8::/32 only, and exist only inside these namespaces.
 *
 * Under CI=true a missing prerequisite (root, `ip`, netns support) is a failure, never a silent skip: call
 * `labPrerequisites(t, [...])` at the top of a lab test.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { promisify } from 'node:util';
import { existsSync, readFileSync } from 'node:fs';

const pexec = promisify(execFile);

/** Run a command (argument array, no shell); reject with stderr on failure. */
export async function run(cmd: string, args: string[], opts: { allowFail?: boolean } = {}): Promise<string> {
  try {
    const { stdout } = await pexec(cmd, args, { maxBuffer: 64 * 1024 * 1024 });
    return stdout;
  } catch (err) {
    if (opts.allowFail) return '';
    const e = err as { stderr?: string; message: string };
    throw new Error(`${cmd} ${args.join(' ')} failed: ${e.stderr?.trim() || e.message}`);
  }
}

/** Run a command inside a namespace. */
export function nsRun(ns: string, cmd: string, args: string[], opts: { allowFail?: boolean } = {}): Promise<string> {
  return run('ip', ['netns', 'exec', ns, cmd, ...args], opts);
}

/** Start a long-running process inside a namespace; the returned child's pid is the daemon's own pid. */
export function nsSpawn(ns: string, cmd: string, args: string[], opts: { env?: NodeJS.ProcessEnv } = {}): ChildProcess {
  return spawn('ip', ['netns', 'exec', ns, cmd, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: opts.env ?? process.env });
}

const BINARIES: Record<string, string[]> = {
  ip: ['/usr/sbin/ip', '/usr/bin/ip', '/sbin/ip'],
  gobgpd: ['/usr/bin/gobgpd', '/usr/sbin/gobgpd'],
  bird: ['/usr/sbin/bird', '/usr/bin/bird'],
  birdc: ['/usr/sbin/birdc', '/usr/bin/birdc'],
  iptables: ['/usr/sbin/iptables', '/sbin/iptables'],
  'iptables-restore': ['/usr/sbin/iptables-restore', '/sbin/iptables-restore'],
};

/**
 * Returns why the lab can't run here, or undefined when it can. Needs root and the named binaries.
 */
export function labMissing(binaries: string[] = []): string | undefined {
  if (process.getuid?.() !== 0) return 'lab tests need root (network namespaces)';
  for (const b of ['ip', ...binaries]) {
    const paths = BINARIES[b] ?? [`/usr/bin/${b}`, `/usr/sbin/${b}`];
    if (!paths.some((p) => existsSync(p))) return `lab tests need ${b} (apt-get install: see README "Tests")`;
  }
  return undefined;
}

/** Options for `t.test` of a lab test: skip outside CI when a prerequisite is missing; under CI=true, fail. */
export function labSkip(binaries: string[] = []): string | false {
  const missing = labMissing(binaries);
  if (missing === undefined) return false;
  if (process.env.CI === 'true') throw new Error(`CI=true and a lab prerequisite is missing: ${missing}`);
  return missing;
}

let counter = 0;

/** A pair of namespaces joined by one veth pair, with IPv4 and IPv6 addresses on both ends. */
export interface Lab {
  /** Namespace names. */
  readonly a: string;
  readonly b: string;
  /** Interface names inside a and b. */
  readonly ifA: string;
  readonly ifB: string;
  readonly ipA: string;
  readonly ipB: string;
  readonly ip6A: string;
  readonly ip6B: string;
  destroy(): Promise<void>;
}

/**
 * Third octets of the lab's own addresses (198.18.S.1/.2, 2001:db8:<hex S>::1/::2): none that a test uses for VIPs
 * (198.18.0-20, 99-126, 200-255; 2001:db8:10::, 12::, 100::, 202::), since the prefix policy refuses a VIP that is
 * the node's or the peer's address.
 */
const LAB_SUBNETS = [...Array.from({ length: 78 }, (_, i) => 21 + i), ...Array.from({ length: 73 }, (_, i) => 127 + i)];

/**
 * Create two namespaces `<prefix>a-N` / `<prefix>b-N` joined by veth, IPv4 198.18.<subnet>.1/.2 /24 and
 * IPv6 2001:db8:<subnet>::1/::2 /64, lo up in both. `subnet` keeps parallel labs apart (0..255).
 */
export async function createLab(opts: { prefix?: string; subnet?: number } = {}): Promise<Lab> {
  const n = `${process.pid % 10000}${counter++}`;
  const prefix = opts.prefix ?? 'vc';
  const subnet = opts.subnet ?? LAB_SUBNETS[Number(n) % LAB_SUBNETS.length]!;
  const a = `${prefix}a${n}`;
  const b = `${prefix}b${n}`;
  const ifA = `va${n}`.slice(0, 15);
  const ifB = `vb${n}`.slice(0, 15);
  const lab: Lab = {
    a, b, ifA, ifB,
    ipA: `198.18.${subnet}.1`, ipB: `198.18.${subnet}.2`,
    ip6A: `2001:db8:${subnet.toString(16)}::1`, ip6B: `2001:db8:${subnet.toString(16)}::2`,
    async destroy() {
      await run('ip', ['netns', 'del', a], { allowFail: true });
      await run('ip', ['netns', 'del', b], { allowFail: true });
    },
  };
  await run('ip', ['netns', 'add', a]);
  await run('ip', ['netns', 'add', b]);
  await run('ip', ['link', 'add', ifA, 'netns', a, 'type', 'veth', 'peer', 'name', ifB, 'netns', b]);
  for (const [ns, ifc, ip, ip6] of [[a, ifA, lab.ipA, lab.ip6A], [b, ifB, lab.ipB, lab.ip6B]] as const) {
    await nsRun(ns, 'ip', ['link', 'set', 'lo', 'up']);
    await nsRun(ns, 'ip', ['addr', 'add', `${ip}/24`, 'dev', ifc]);
    await nsRun(ns, 'ip', ['-6', 'addr', 'add', `${ip6}/64`, 'dev', ifc, 'nodad']);
    await nsRun(ns, 'ip', ['link', 'set', ifc, 'up']);
  }
  return lab;
}

/** Poll `fn` until it returns a truthy value or `timeoutMs` passes; returns the value or throws with the last one. */
export async function waitFor<T>(fn: () => Promise<T> | T, timeoutMs: number, what: string, intervalMs = 50): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: T | undefined;
  let lastErr: unknown;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (err) {
      lastErr = err;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (last: ${JSON.stringify(last)}${lastErr ? `, error: ${String(lastErr)}` : ''})`);
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/** SIGTERM a child, SIGKILL it after 2 s, and wait for it to exit. */
export async function stopChild(child: ChildProcess, exited: Promise<unknown>): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill('SIGTERM');
  const t = setTimeout(() => child.kill('SIGKILL'), 2000);
  await exited;
  clearTimeout(t);
}

/** True when the pid runs (a zombie, dead but not yet reaped by its new parent, does not run). */
export function pidRunning(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}
