/**
 * The pid file `vipcast run` writes once the daemon runs (agent.pid_file, or --pid-file on the command line), so
 * `vipcast reload` and systemd's ExecReload signal only a daemon that is up. A reload that changes agent.pid_file
 * moves it: the new file is written first (a path that can't be written fails the reload, the old file stays), the
 * old one is removed once the reload has succeeded.
 */
import { readFileSync, unlinkSync, writeFileSync } from 'node:fs';
import { VipcastError } from './errors.js';

export class PidFile {
  private current = '';
  private managed = false;
  private pinnedBy = '';

  /** The file that holds this process's pid now ('' = none). */
  get path(): string {
    return this.current;
  }

  /** Why agent.pid_file changes are not applied ('' = they are): the command line named the file. */
  get pinned(): string {
    return this.pinnedBy;
  }

  /** Whether `vipcast run` manages a pid file for this daemon (a daemon built in-process by a test does not). */
  get active(): boolean {
    return this.managed;
  }

  /**
   * Take charge of the pid file once the daemon runs: write `path` ('' = none). `pinnedBy`: the command-line
   * option that named it; a reload then leaves it where it is. Throws VIPCAST_ERR_PID_FILE.
   */
  adopt(path: string, pinnedBy = ''): void {
    this.managed = true;
    this.pinnedBy = pinnedBy;
    if (path) write(path);
    this.current = path;
  }

  /**
   * Reload, first step: write the pid to `next` (old file untouched). Returns the step that finishes the move
   * (removes the old file) and the one that undoes it (removes the new file). Throws VIPCAST_ERR_PID_FILE.
   */
  prepareMove(next: string): { commit(): void; undo(): void } {
    const prev = this.current;
    if (next === prev) return { commit: () => undefined, undo: () => undefined };
    if (next) write(next);
    this.current = next;
    return {
      commit: () => {
        if (prev) removeIfOurs(prev);
      },
      undo: () => {
        if (next) removeIfOurs(next);
        this.current = prev;
      },
    };
  }

  /** At exit: remove the file (only if it still holds this process's pid). Safe to call twice. */
  remove(): void {
    if (this.current) removeIfOurs(this.current);
    this.current = '';
  }
}

function write(path: string): void {
  try {
    writeFileSync(path, `${process.pid}\n`);
  } catch (err) {
    throw new VipcastError('VIPCAST_ERR_PID_FILE', `agent.pid_file: cannot write "${path}": ${(err as Error).message}`, { cause: err });
  }
}

/** A file another process has written since (a second daemon, by mistake) is left alone. */
function removeIfOurs(path: string): void {
  try {
    if (readFileSync(path, 'utf8').trim() === String(process.pid)) unlinkSync(path);
  } catch {
    /* already gone */
  }
}
