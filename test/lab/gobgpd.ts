/**
 * Test lab: a real gobgpd inside a lab namespace, its gRPC API on a unix socket in a temp dir so the test process
 * (outside the namespace) can reach it. No config file: vipcast configures it over the API, as in production.
 */
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { nsSpawn, stopChild, waitFor } from './netns.js';
import { GobgpClient } from '../../src/plugins/routing/gobgp/client.js';

export interface Gobgpd {
  readonly ns: string;
  readonly dir: string;
  /** Path of the API socket. */
  readonly sock: string;
  /** `unix:///...`, for `routing.gobgp.address`. */
  readonly address: string;
  /** gobgpd's own pid (ip netns exec execs it). */
  readonly pid: number;
  /** Everything gobgpd logged so far (plain format). */
  output(): string;
  /** Send a signal and wait for the process to exit. */
  kill(signal?: NodeJS.Signals): Promise<void>;
  /** Start a new gobgpd on the same socket (after kill). */
  restart(): Promise<void>;
  /** Poll GetBgp until gobgpd answers; returns the time it first answered (Date.now()). */
  waitAnswering(timeoutMs?: number): Promise<number>;
  /** SIGTERM, then SIGKILL after 2 s; removes the temp dir. Safe twice. */
  stop(): Promise<void>;
}

/** `dir`: where the API socket goes (known before gobgpd starts); a dir given by the caller is not removed. */
/** `args`: gobgpd's arguments for the API socket `sock` (default: the lab's own, plain logs). */
export async function startGobgpd(opts: { ns: string; dir?: string; logLevel?: string; args?: (sock: string) => string[] }): Promise<Gobgpd> {
  const dir = opts.dir ?? mkdtempSync(join(tmpdir(), 'vc-gobgpd-'));
  const sock = join(dir, 'gobgp.sock');
  let child: ChildProcess;
  let out = '';
  let exited: Promise<void>;

  const spawnIt = async () => {
    // A socket left by a killed gobgpd makes the new one fail to listen.
    rmSync(sock, { force: true });
    out = '';
    child = nsSpawn(opts.ns, 'gobgpd', opts.args?.(sock) ?? ['--pprof-disable', '-p', '-l', opts.logLevel ?? 'info', '--api-hosts', `unix://${sock}`]);
    const append = (b: Buffer) => {
      out += b.toString();
      if (out.length > 1_000_000) out = out.slice(-500_000);
    };
    child.stdout?.on('data', append);
    child.stderr?.on('data', append);
    exited = new Promise((resolve) => child.once('exit', () => resolve()));
    // If the test process dies before its teardown (a test-level timeout), do not leave gobgpd running.
    const c = child;
    const onExit = () => c.kill('SIGKILL');
    process.once('exit', onExit);
    void exited.then(() => process.removeListener('exit', onExit));
    await waitFor(() => existsSync(sock) || child.exitCode !== null, 5000, `gobgpd API socket ${sock}`, 10).catch((err: Error) => {
      child.kill('SIGKILL');
      throw err;
    });
    if (child.exitCode !== null) throw new Error(`gobgpd exited at start: ${out}`);
  };
  await spawnIt();

  let stopped = false;
  const g: Gobgpd = {
    ns: opts.ns,
    dir,
    sock,
    address: `unix://${sock}`,
    get pid() {
      return child.pid ?? -1;
    },
    output: () => out,
    async kill(signal: NodeJS.Signals = 'SIGKILL') {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill(signal);
      await exited;
    },
    async restart() {
      await g.kill('SIGKILL');
      await spawnIt();
    },
    async waitAnswering(timeoutMs = 5000) {
      const c = new GobgpClient(g.address, { timeoutMs: 200, maxReconnectBackoffMs: 20 });
      try {
        return await waitFor(async () => {
          await c.unary('GetBgp', {}, 200);
          return Date.now();
        }, timeoutMs, 'gobgpd to answer GetBgp', 5);
      } finally {
        c.close();
      }
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      await stopChild(child, exited);
      if (!opts.dir) {
        try {
          writeFileSync(join(dir, 'gobgpd.log'), out);
        } catch {
          // best effort
        }
        rmSync(dir, { recursive: true, force: true });
      }
    },
  };
  return g;
}
