/** Run vipcast as a child process and read its JSON log lines. */
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer, type Server } from 'node:net';
import { fileURLToPath } from 'node:url';

export const BIN = fileURLToPath(new URL('../../../bin/vipcast.js', import.meta.url));

export interface LogLine {
  level: number;
  msg: string;
  time: number;
  event?: string;
  action?: string;
  prefix?: string;
  app?: string;
  [k: string]: unknown;
}

export class DaemonProcess {
  readonly child: ChildProcess;
  readonly lines: Array<LogLine & { at: number }> = [];
  readonly stderr: string[] = [];
  /** Log lines that name a top-level key twice (pino prints both; a strict JSON consumer keeps one or refuses the line). */
  readonly repeatedKeys: string[] = [];
  private waiters: Array<() => void> = [];
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;

  /** `plain`: without tap's preload, which tap puts into every child's NODE_OPTIONS and which catches SIGHUP itself. */
  constructor(args: string[], opts: { env?: NodeJS.ProcessEnv; netns?: string; plain?: boolean } = {}) {
    const node = opts.plain ? ['/usr/bin/env', '-u', 'NODE_OPTIONS', process.execPath] : [process.execPath];
    const full = opts.netns ? ['ip', 'netns', 'exec', opts.netns, ...node, BIN, ...args] : [...node, BIN, ...args];
    this.child = spawn(full[0]!, full.slice(1), { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...opts.env } });
    let buf = '';
    this.child.stdout!.setEncoding('utf8');
    this.child.stdout!.on('data', (chunk: string) => {
      buf += chunk;
      let nl;
      while ((nl = buf.indexOf('\n')) !== -1) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        try {
          this.lines.push({ ...(JSON.parse(line) as LogLine), at: performance.now() });
          if (repeatedTopLevelKey(line) !== undefined) this.repeatedKeys.push(line);
        } catch {
          this.stderr.push(`stdout: ${line}`);
        }
        for (const w of this.waiters.splice(0)) w();
      }
    });
    this.child.stderr!.setEncoding('utf8');
    this.child.stderr!.on('data', (c: string) => this.stderr.push(c));
    this.exited = new Promise((resolve) => this.child.on('exit', (code, signal) => resolve({ code, signal })));
  }

  /** Wait for a log line matching `pred` (searching from line index `from`); returns it. */
  async waitLine(pred: (l: LogLine) => boolean, timeoutMs: number, what: string, from = 0): Promise<LogLine & { at: number }> {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const hit = this.lines.slice(from).find(pred);
      if (hit) return hit;
      const left = deadline - performance.now();
      if (left <= 0) throw new Error(`timed out waiting for ${what}; last lines:\n${this.lines.slice(-8).map((l) => JSON.stringify(l)).join('\n')}\nstderr: ${this.stderr.join('').slice(-2000)}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.min(left, 200));
        this.waiters.push(() => { clearTimeout(timer); resolve(); });
      });
    }
  }

  kill(signal: NodeJS.Signals = 'SIGTERM'): void {
    this.child.kill(signal);
  }

  async stop(): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) {
      this.child.kill('SIGKILL');
      await this.exited;
    }
  }
}

/** A TCP port that nothing listens on right now (bound then released). */
export async function freePort(host = '127.0.0.1'): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, host, () => r()));
  const port = (s.address() as { port: number }).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

export async function listen(port: number, host = '127.0.0.1'): Promise<Server> {
  const s = createServer((c) => c.destroy());
  await new Promise<void>((resolve, reject) => {
    s.once('error', reject);
    s.listen(port, host, () => resolve());
  });
  return s;
}

/** `listen`, closed in `t.teardown` if the test has not closed it by then (a failing test must not hang its file). */
export async function serve(t: { teardown(fn: () => unknown): void }, port: number, host = '127.0.0.1'): Promise<Server> {
  const s = await listen(port, host);
  t.teardown(() => closeServer(s));
  return s;
}

/** Close a server (safe to call twice). */
export function closeServer(s: Server): Promise<void> {
  if (!s.listening) return Promise.resolve();
  return new Promise((r) => s.close(() => r()));
}

/** The first top-level key that `json` (one JSON object) names twice, or undefined. */
export function repeatedTopLevelKey(json: string): string | undefined {
  const seen = new Set<string>();
  let depth = 0;
  for (let i = 0; i < json.length; i++) {
    const c = json[i];
    if (c === '"') {
      let j = i + 1;
      while (j < json.length && json[j] !== '"') j += json[j] === '\\' ? 2 : 1;
      const text = json.slice(i + 1, j);
      let k = j + 1;
      while (json[k] === ' ') k++;
      if (depth === 1 && json[k] === ':') {
        if (seen.has(text)) return text;
        seen.add(text);
      }
      i = j;
    } else if (c === '{' || c === '[') depth++;
    else if (c === '}' || c === ']') depth--;
  }
  return undefined;
}

/** A dry-run config's routing and bgp sections: local 198.18.0.2 (AS 65001), one peer 198.18.0.1 (AS 65000). */
export const DRY_RUN_BGP = `routing:
  plugin: dry-run
bgp:
  local_as: 65001
  local_ip: 198.18.0.2
  peers:
    - peer_ip: 198.18.0.1
      peer_as: 65000
`;
