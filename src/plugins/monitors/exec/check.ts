/**
 * `exec` check (runs inside a check-pool worker): `bash -c COMMAND`, exit 0 = up. The command gets its own process
 * group and, where the pool has cgroups (check-cgroups.ts), a cgroup of its own; at the timeout the group and the
 * cgroup are killed with SIGKILL, so a `sleep 60` it started does not outlive the check. Once bash has exited,
 * whatever it left running is killed too: a health check leaves nothing behind. A daemon that detaches with setsid
 * leaves the process group but not the cgroup, so it is killed as well; where there are no cgroups it escapes (the pool
 * logs which of the two holds at start). The reason is the exit status plus the last lines of combined stdout and
 * stderr.
 *
 * The gate. A command must never run in a group the pool does not know of: a worker terminated (or vipcast exiting)
 * between spawn() and the registration would leave it running for good. So bash first waits for one line on its
 * stdin (GATE); the check registers the group in the pool's shared table, and only if the pool is not stopping writes
 * that line, which execs the command in the same process (same pid, same group, stdin from /dev/null). If the worker
 * dies first, the pipe closes, `read` sees end-of-file and bash exits without running anything.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import type { CheckFunction, CheckResult } from '../../../plugin-api.js';
import { trackProcessGroup } from '../../../core/check-worker.js';
import type { ExecParams } from './index.js';

/** Waits for the release line, then becomes `bash -c "$1"` (the command); exit 125 if the check never released it. */
export const GATE = 'IFS= read -r _ || exit 125; exec bash -c "$1" </dev/null';
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
      child = spawn('bash', ['-c', GATE, 'vipcast-check', command], { detached: true, stdio: ['pipe', 'pipe', 'pipe'] });
    } catch (err) {
      resolve({ ok: false, reason: `cannot run bash: ${(err as Error).message}` });
      return;
    }
    const pgid = child.pid;
    // No pid: spawn failed, and its 'error' event reports why (nothing was started).
    const tracked = pgid === undefined ? undefined : trackProcessGroup(pgid);
    const untrack = (): void => tracked?.untrack();
    const killAll = (): void => tracked?.kill();
    // Writing to a gate that was killed meanwhile fails with EPIPE: nothing to report.
    child.stdin?.on('error', () => {});
    let timedOut = false;
    let exited: { code: number | null; signal: NodeJS.Signals | null } | undefined;
    let pipeTimer: NodeJS.Timeout | undefined;
    let finished = false;

    const onAbort = (): void => {
      timedOut = true;
      killAll();
    };
    ctx.signal.addEventListener('abort', onAbort, { once: true });

    const finish = (result: CheckResult): void => {
      if (finished) return;
      finished = true;
      clearTimeout(pipeTimer);
      ctx.signal.removeEventListener('abort', onAbort);
      killAll();
      untrack();
      child.stdin?.destroy();
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

    if (tracked === undefined) return;
    if (!tracked.allowed && tracked.late !== true) {
      killAll();
      finish({ ok: false, reason: tracked.refusal ?? 'not run' });
    } else if (!tracked.allowed || ctx.signal.aborted) {
      // The budget ran out while bash was being forked: the command never starts.
      killAll();
      finish({ ok: false, reason: `timed out after ${ctx.timeoutMs} ms (not started)` });
    } else {
      child.stdin?.end('\n');
    }
  });

export default check;
