/**
 * `exec` check (runs inside a check-pool worker): `bash -c COMMAND`, exit 0 = up. The command gets its own process
 * group; at the timeout the whole group is killed with SIGKILL, so a `sleep 60` it started does not outlive the check.
 * Once bash has exited, whatever it left running in its group is killed too: a health check leaves nothing behind
 * (a daemon that detaches with setsid has left the group and is not touched). The reason is the exit status plus the
 * last lines of combined stdout and stderr.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import type { CheckFunction, CheckResult } from '../../../plugin-api.js';
import { trackProcessGroup } from '../../../core/check-worker.js';
import type { ExecParams } from './index.js';

const TAIL_BYTES = 2048;
const TAIL_LINES = 10;
/** After bash exits, how long to wait for its pipes to close (a background child may hold them open). */
const PIPE_GRACE_MS = 100;

/** Keeps the last TAIL_BYTES of everything written to it. */
class Tail {
  private chunks: Buffer[] = [];
  private size = 0;

  push(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.size += chunk.length;
    if (this.size > 2 * TAIL_BYTES) {
      const joined = Buffer.concat(this.chunks).subarray(-TAIL_BYTES);
      this.chunks = [joined];
      this.size = joined.length;
    }
  }

  text(): string {
    const bytes = Buffer.concat(this.chunks).subarray(-TAIL_BYTES);
    // The cut may split a UTF-8 sequence at the start; the replacement character it leaves is harmless.
    const lines = bytes.toString('utf8').split(/\r?\n/).map((l) => l.trimEnd()).filter((l) => l !== '');
    return lines.slice(-TAIL_LINES).join('\n');
  }
}

function killGroup(pgid: number | undefined): void {
  if (pgid === undefined) return;
  try {
    process.kill(-pgid, 'SIGKILL');
  } catch {
    // ESRCH: the group is already empty.
  }
}

export const check: CheckFunction = (params, ctx) =>
  new Promise<CheckResult>((resolve) => {
    const { command } = params as ExecParams;
    if (ctx.signal.aborted) {
      resolve({ ok: false, reason: `timed out after ${ctx.timeoutMs} ms (not started)` });
      return;
    }
    const tail = new Tail();
    let child: ChildProcess;
    try {
      child = spawn('bash', ['-c', command], { detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    } catch (err) {
      resolve({ ok: false, reason: `cannot run bash: ${(err as Error).message}` });
      return;
    }
    const pgid = child.pid;
    const untrack = pgid === undefined ? () => {} : trackProcessGroup(pgid);
    let timedOut = false;
    let exited: { code: number | null; signal: NodeJS.Signals | null } | undefined;
    let pipeTimer: NodeJS.Timeout | undefined;
    let finished = false;

    const onAbort = (): void => {
      timedOut = true;
      killGroup(pgid);
    };
    ctx.signal.addEventListener('abort', onAbort, { once: true });

    const finish = (result: CheckResult): void => {
      if (finished) return;
      finished = true;
      clearTimeout(pipeTimer);
      ctx.signal.removeEventListener('abort', onAbort);
      killGroup(pgid);
      untrack();
      child.stdout?.destroy();
      child.stderr?.destroy();
      resolve(result);
    };

    const report = (): void => {
      const output = tail.text();
      const withOutput = (head: string): string => (output === '' ? head : `${head}: ${output}`);
      if (timedOut) return finish({ ok: false, reason: withOutput(`timed out after ${ctx.timeoutMs} ms`) });
      if (exited === undefined) return finish({ ok: false, reason: withOutput('exited') });
      if (exited.code === 0) return finish({ ok: true, reason: withOutput('exit 0') });
      if (exited.code !== null) return finish({ ok: false, reason: withOutput(`exit ${exited.code}`) });
      return finish({ ok: false, reason: withOutput(`killed by ${exited.signal ?? 'a signal'}`) });
    };

    child.stdout?.on('data', (chunk: Buffer) => tail.push(chunk));
    child.stderr?.on('data', (chunk: Buffer) => tail.push(chunk));
    child.on('error', (err) => finish({ ok: false, reason: `cannot run bash: ${err.message}` }));
    child.on('exit', (code, signal) => {
      exited = { code, signal };
      // Normally the pipes close right after; if something in the background still holds them, don't wait for it.
      pipeTimer = setTimeout(report, PIPE_GRACE_MS);
    });
    child.on('close', report);
  });

export default check;
