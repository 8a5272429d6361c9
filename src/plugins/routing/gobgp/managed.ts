/**
 * A managed gobgpd (`routing.gobgp.managed`): vipcast starts gobgpd itself, as a child bound to vipcast's life, with
 * its gRPC API on a unix socket in a directory only vipcast's user can enter. It is a daemon-level component (like the
 * check pool): config generations come and go on reload, this process stays.
 *
 * Bound to vipcast's life: gobgpd is started through `setpriv --pdeathsig KILL --`, so the kernel sends it SIGKILL
 * when vipcast dies, however it dies (SIGKILL, OOM, crash): the BGP sessions close and the routers drop the routes at
 * once, not at hold-timer expiry. PR_SET_PDEATHSIG fires when the thread that forked exits; libuv forks on Node's main
 * thread, which lives as long as the process. It survives the execve of gobgpd (not set-uid).
 *
 * The race (vipcast dies after the fork, before setpriv has set the death signal) is harmless by construction: vipcast
 * configures gobgpd (StartBgp, peers, paths) only over the API, the API answers only after setpriv exec'd gobgpd, so
 * a gobgpd orphaned in that window has no BGP config, no session and no route. The next start finds it through the pid
 * file in the private directory (its command line names this socket) and kills it.
 *
 * Crash restart: an unexpected exit is logged and gobgpd is started again after a backoff (0.5 s doubling to 10 s,
 * back to 0.5 s once a gobgpd ran a minute). The router notices the fresh gobgpd (GetBgp says AS 0), restores
 * global config and peers, and the reconciler re-announces everything (a full pass).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants, lstatSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { delimiter, isAbsolute, join } from 'node:path';
import type { Logger } from '../../../core/logger.js';
import { VipcastError } from '../../../core/errors.js';
import { MANAGED_SOCKET_NAME } from './settings.js';
import { GobgpClient } from './client.js';
/** The pid file of the running managed gobgpd, beside its socket. */
export const PID_NAME = 'gobgpd.pid';

export function managedSocket(socketDir: string): string {
  return join(socketDir, MANAGED_SOCKET_NAME);
}

export interface ManagedGobgpdOptions {
  /** routing.gobgp.binary: a command name looked up in PATH, or an absolute path. */
  readonly binary: string;
  /** routing.gobgp.socket_dir: the private directory of the API socket. */
  readonly socketDir: string;
  readonly log: Logger;
  /** Called on each unexpected exit that leads to a restart (the restarts metric). */
  readonly onRestart?: () => void;
  /** How long start() waits for the API to answer. Default 10 s. */
  readonly startTimeoutMs?: number;
  /** After SIGTERM at stop(), how long before SIGKILL. Default 1 s. */
  readonly killAfterMs?: number;
  /** The environment whose PATH finds the binaries (default: process.env). */
  readonly env?: NodeJS.ProcessEnv;
}

/** First restart delay; it doubles up to MAX_BACKOFF_MS, and goes back to this once a gobgpd ran STABLE_MS. */
export const MIN_BACKOFF_MS = 500;
export const MAX_BACKOFF_MS = 10_000;
export const STABLE_MS = 60_000;

/** gobgpd's log fields that may hold a secret (a peer's MD5 password): dropped before they reach vipcast's log. */
const SECRET_FIELD = /pass|secret|token|key_?data/i;
/** The same inside a message text (a config dump such as `AuthPassword:x` or `"auth_password":"x"`). */
const SECRET_TEXT = /((?:auth_?password|password)["']?\s*[:=]\s*["']?)[^\s"',}]+/gi;

const LEVELS: Record<string, 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal'> = {
  trace: 'trace', debug: 'debug', info: 'info', warning: 'warn', warn: 'warn', error: 'error', fatal: 'error', panic: 'error',
};

export class ManagedGobgpd {
  /** The gRPC target the router connects to: `unix:///<socket_dir>/gobgpd.sock`. */
  readonly address: string;
  readonly socket: string;
  private readonly pidFile: string;
  private readonly log: Logger;
  private child: ChildProcess | undefined;
  private exited: Promise<void> = Promise.resolve();
  private stopping: Promise<void> | undefined;
  private restartTimer: NodeJS.Timeout | undefined;
  private backoffMs = MIN_BACKOFF_MS;
  private startedAt = 0;
  /** The last lines gobgpd wrote, for the error when it fails to start or crashes (secrets scrubbed). */
  private tail: string[] = [];
  /** Set once start() succeeded: from then on an exit is a crash and gobgpd is restarted. */
  private supervising = false;
  /** Unexpected exits so far. */
  restarts = 0;

  constructor(private readonly opts: ManagedGobgpdOptions) {
    this.socket = managedSocket(opts.socketDir);
    this.address = `unix://${this.socket}`;
    this.pidFile = join(opts.socketDir, PID_NAME);
    this.log = opts.log.child({ component: 'gobgpd' });
  }

  /** The running gobgpd's pid (undefined between a crash and its restart). */
  get pid(): number | undefined {
    return this.child && this.child.exitCode === null && this.child.signalCode === null ? this.child.pid : undefined;
  }

  /**
   * Prepare the private directory, start gobgpd and resolve once its API answers GetBgp. Rejects with
   * VIPCAST_ERR_SPEAKER (naming the setting) when the binary or setpriv is missing, the directory is not private,
   * another process serves the socket, or gobgpd exits or does not answer in time.
   */
  async start(): Promise<void> {
    if (this.stopping) throw new VipcastError('VIPCAST_ERR_SPEAKER', 'routing.gobgp.managed: the managed gobgpd was stopped');
    const programs = { gobgpd: this.findBinary(), setpriv: this.findSetpriv() };
    this.prepareDir();
    await this.killOrphan();
    await this.clearSocket();
    await this.spawnAndWait(programs);
    this.supervising = true;
  }

  /** SIGTERM, SIGKILL after killAfterMs (also ends a SIGSTOPped gobgpd), then the socket and pid file go. Safe twice. */
  stop(): Promise<void> {
    this.stopping ??= this.doStop();
    return this.stopping;
  }

  private async doStop(): Promise<void> {
    clearTimeout(this.restartTimer);
    const child = this.child;
    if (child && child.pid !== undefined && child.exitCode === null && child.signalCode === null) {
      this.log.info({ pid: child.pid }, 'stopping the managed gobgpd');
      child.kill('SIGTERM');
      const killer = setTimeout(() => {
        this.log.warn({ pid: child.pid, after_ms: this.opts.killAfterMs ?? 1000 }, 'the managed gobgpd did not exit on SIGTERM: SIGKILL');
        child.kill('SIGKILL');
      }, this.opts.killAfterMs ?? 1000);
      await this.exited;
      clearTimeout(killer);
    }
    // Only what this vipcast made: a start refused because another process serves the socket leaves it alone.
    if (child) this.removeFiles();
  }

  private removeFiles(): void {
    rmSync(this.socket, { force: true });
    rmSync(this.pidFile, { force: true });
  }

  private speakerError(message: string, cause?: unknown): VipcastError {
    return new VipcastError('VIPCAST_ERR_SPEAKER', message, cause === undefined ? {} : { cause });
  }

  private findBinary(): string {
    const found = findProgram(this.opts.binary, this.opts.env ?? process.env);
    if (found) return found;
    throw this.speakerError(`routing.gobgp.managed: gobgpd "${this.opts.binary}" (routing.gobgp.binary) is not ${isAbsolute(this.opts.binary) ? 'an executable file' : 'found in PATH'}: install the gobgpd package (GoBGP 3.x), set routing.gobgp.binary, or set routing.gobgp.address to use a gobgpd you run yourself`);
  }

  private findSetpriv(): string {
    const found = findProgram('setpriv', this.opts.env ?? process.env);
    if (found) return found;
    throw this.speakerError('routing.gobgp.managed: setpriv (util-linux) is not found in PATH: vipcast needs it to bind gobgpd\'s life to its own (install util-linux, or set routing.gobgp.address to use a gobgpd you run yourself)');
  }

  /** The socket directory: created 0700 if missing; an existing one must be a real directory, ours, closed to others. */
  private prepareDir(): void {
    const dir = this.opts.socketDir;
    try {
      mkdirSync(dir, { recursive: true, mode: 0o700 });
    } catch (err) {
      throw this.speakerError(`routing.gobgp.socket_dir: cannot create ${dir}: ${(err as Error).message}`, err);
    }
    const st = lstatSync(dir);
    const uid = process.getuid?.() ?? st.uid;
    if (!st.isDirectory()) throw this.speakerError(`routing.gobgp.socket_dir: ${dir} is not a directory (a symlink is refused too)`);
    if (st.uid !== uid) throw this.speakerError(`routing.gobgp.socket_dir: ${dir} belongs to uid ${st.uid}, not to vipcast's user (uid ${uid})`);
    if ((st.mode & 0o077) !== 0) {
      // gobgpd's API has no authentication: whoever reaches the socket reads the peers' MD5 passwords and announces anything.
      throw this.speakerError(`routing.gobgp.socket_dir: ${dir} has mode 0${(st.mode & 0o777).toString(8)}; it must be 0700 (only vipcast's user may reach gobgpd's API): chmod 0700 it or name a directory of vipcast's own`);
    }
  }

  /** A gobgpd an earlier vipcast started on this socket and that outlived it (see the race in the header): killed. */
  private async killOrphan(): Promise<void> {
    let pid: number;
    try {
      pid = Number(readFileSync(this.pidFile, 'utf8').trim());
    } catch {
      return;
    }
    if (!Number.isInteger(pid) || pid <= 1) return;
    let cmdline = '';
    try {
      cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    } catch {
      return; // gone
    }
    if (!cmdline.includes(`unix://${this.socket}`)) return; // the pid was reused by something else
    this.log.warn({ pid }, 'a gobgpd started by an earlier vipcast on this socket still runs: killing it');
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      return;
    }
    // gobgpd is multi-threaded: its main thread can be a zombie while another thread still holds the listening
    // socket for a moment, so wait for the socket to stop answering too.
    const deadline = Date.now() + 3000;
    while (Date.now() < deadline && (running(pid) || (await answers(this.socket)))) await sleep(20);
  }

  /** A socket nobody serves is removed (gobgpd would fail to listen); one that answers belongs to someone else. */
  private async clearSocket(): Promise<void> {
    let exists = true;
    try {
      lstatSync(this.socket);
    } catch {
      exists = false;
    }
    if (!exists) return;
    if (await answers(this.socket)) {
      throw this.speakerError(`routing.gobgp.socket_dir: another process already serves ${this.socket} (a gobgpd vipcast did not start, or another vipcast with the same routing.gobgp.socket_dir): stop it or choose another routing.gobgp.socket_dir`);
    }
    rmSync(this.socket, { force: true });
  }

  private async spawnAndWait(programs: { gobgpd: string; setpriv: string }): Promise<void> {
    this.tail = [];
    const args = ['--pdeathsig', 'KILL', '--', programs.gobgpd, '--pprof-disable', '--log-level', 'info', '--api-hosts', this.address];
    // detached: a process group of its own, so a terminal's Ctrl-C reaches vipcast only, which withdraws first and
    // stops gobgpd last.
    const child = spawn(programs.setpriv, args, { stdio: ['ignore', 'pipe', 'pipe'], detached: true, env: this.opts.env ?? process.env });
    this.child = child;
    this.startedAt = performance.now();
    let spawnError: Error | undefined;
    child.on('error', (err) => (spawnError = err));
    this.exited = new Promise((resolve) => child.once('exit', (code, signal) => {
      this.onExit(child, code, signal);
      resolve();
    }));
    lines(child.stdout!, (line) => this.logLine(line));
    lines(child.stderr!, (line) => this.logRaw(line));
    if (child.pid !== undefined) writeFileSync(this.pidFile, `${child.pid}\n`, { mode: 0o600 });
    this.log.info({ pid: child.pid, socket: this.socket }, 'managed gobgpd started');

    const timeoutMs = this.opts.startTimeoutMs ?? 10_000;
    const deadline = performance.now() + timeoutMs;
    const client = new GobgpClient(this.address, { timeoutMs: 500, maxReconnectBackoffMs: 50 });
    try {
      for (;;) {
        if (spawnError) throw this.speakerError(`routing.gobgp.managed: could not start ${programs.setpriv}: ${spawnError.message}`, spawnError);
        if (child !== this.child || child.exitCode !== null || child.signalCode !== null) {
          throw this.speakerError(`routing.gobgp.managed: gobgpd exited at start (${child.signalCode ?? `code ${child.exitCode}`})${this.tailText()}`);
        }
        if (this.stopping) throw this.speakerError('routing.gobgp.managed: stopped while gobgpd was starting');
        try {
          await client.unary('GetBgp', {}, 500);
          this.log.info({ pid: child.pid, ms: Math.round(performance.now() - this.startedAt) }, 'managed gobgpd answers');
          return;
        } catch (err) {
          if (performance.now() > deadline) {
            child.kill('SIGKILL');
            throw this.speakerError(`routing.gobgp.managed: gobgpd did not answer on ${this.socket} within ${timeoutMs} ms${this.tailText()}`, err);
          }
        }
        await sleep(25);
      }
    } catch (err) {
      // Nothing half-started is left behind.
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      throw err;
    } finally {
      client.close();
    }
  }

  private onExit(child: ChildProcess, code: number | null, signal: NodeJS.Signals | null): void {
    if (child !== this.child || this.stopping || !this.supervising) {
      if (this.stopping) this.log.info({ pid: child.pid, code, signal }, 'managed gobgpd stopped');
      return;
    }
    const ranMs = performance.now() - this.startedAt;
    if (ranMs >= STABLE_MS) this.backoffMs = MIN_BACKOFF_MS;
    const delay = this.backoffMs;
    this.backoffMs = Math.min(this.backoffMs * 2, MAX_BACKOFF_MS);
    this.restarts++;
    this.opts.onRestart?.();
    this.log.error({ pid: child.pid, code, signal, ran_ms: Math.round(ranMs), restart_in_ms: delay, restarts: this.restarts, output: this.tail.slice(-5) }, 'the managed gobgpd exited: restarting it (the BGP sessions dropped; routes come back once it answers)');
    this.restartTimer = setTimeout(() => void this.restart(), delay);
  }

  private async restart(): Promise<void> {
    if (this.stopping) return;
    const before = this.child;
    try {
      const programs = { gobgpd: this.findBinary(), setpriv: this.findSetpriv() };
      await this.clearSocket();
      await this.spawnAndWait(programs);
    } catch (err) {
      if (this.stopping) return;
      this.log.error({ err }, 'the managed gobgpd could not be restarted; trying again');
      // A gobgpd that was spawned and then exited (or was killed for not answering): its exit schedules the next try.
      if (this.child !== before && this.child?.pid !== undefined) return;
      // Nothing spawned (binary gone, socket taken by another process): try again after the backoff.
      const delay = this.backoffMs;
      this.backoffMs = Math.min(this.backoffMs * 2, MAX_BACKOFF_MS);
      this.restartTimer = setTimeout(() => void this.restart(), delay);
    }
  }

  /** One JSON line of gobgpd's log, into vipcast's log at the same level, secrets removed. */
  private logLine(line: string): void {
    let rec: Record<string, unknown>;
    try {
      rec = JSON.parse(line) as Record<string, unknown>;
      if (rec === null || typeof rec !== 'object') throw new Error('not an object');
    } catch {
      this.logRaw(line);
      return;
    }
    const { level, msg, time: _time, ...fields } = rec;
    for (const k of Object.keys(fields)) {
      if (SECRET_FIELD.test(k)) delete fields[k];
      else if (typeof fields[k] === 'string') fields[k] = scrub(fields[k] as string);
    }
    const text = scrub(String(msg ?? ''));
    this.remember(text);
    this.log[LEVELS[String(level)] ?? 'info']({ gobgpd: fields }, text);
  }

  /** A line that is not gobgpd's JSON (a Go panic on stderr): an error line. */
  private logRaw(line: string): void {
    const text = scrub(line);
    this.remember(text);
    this.log.error({ pid: this.child?.pid }, `gobgpd: ${text}`);
  }

  private remember(text: string): void {
    this.tail.push(text);
    if (this.tail.length > 20) this.tail.shift();
  }

  private tailText(): string {
    return this.tail.length ? `; gobgpd said: ${this.tail.slice(-3).join(' | ')}` : '';
  }
}

function scrub(text: string): string {
  return text.replace(SECRET_TEXT, '$1[redacted]');
}

/** A command name in PATH, or an absolute path, that is an executable file; undefined otherwise. */
export function findProgram(name: string, env: NodeJS.ProcessEnv): string | undefined {
  const candidates = isAbsolute(name) ? [name] : (env.PATH ?? '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin').split(delimiter).filter(Boolean).map((d) => join(d, name));
  for (const c of candidates) {
    try {
      accessSync(c, constants.X_OK);
      if (lstatSync(c).isDirectory()) continue;
      return c;
    } catch {
      // next
    }
  }
  return undefined;
}

/** True when something accepts a connection on the unix socket. */
function answers(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ path });
    const done = (ok: boolean) => {
      clearTimeout(timer);
      s.destroy();
      resolve(ok);
    };
    const timer = setTimeout(() => done(true), 1000); // a listener that does not accept at once still holds the socket
    s.once('connect', () => done(true));
    s.once('error', () => done(false));
  });
}

function running(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

function lines(stream: NodeJS.ReadableStream, onLine: (line: string) => void): void {
  let buf = '';
  stream.setEncoding('utf8');
  stream.on('data', (chunk: string) => {
    buf += chunk;
    if (buf.length > 1_000_000) buf = buf.slice(-100_000);
    let nl;
    while ((nl = buf.indexOf('\n')) !== -1) {
      const line = buf.slice(0, nl).trim();
      buf = buf.slice(nl + 1);
      if (line) onLine(line);
    }
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
