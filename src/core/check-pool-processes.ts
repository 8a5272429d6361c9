/**
 * The processes of a check pool's checks. Every process group a check creates is registered in a table shared with
 * the workers (process-groups.ts) before its command may run, and put into a cgroup of its own below the pool's
 * (check-cgroups.ts; where cgroups are not writable, the process group is all there is, and the pool logs so at
 * start). `stopCommands()` (first thing at shutdown, and on process exit) closes the table, kills every group in it and
 * the pool's whole cgroup (also what a command detached with setsid), synchronously; afterwards no command starts.
 * Process groups of checks on a dead worker are killed here (`reap`), since the worker could not do it.
 */
import type { Logger } from './logger.js';
import type { CheckWorkerData } from './check-worker.js';
import { closeTable, createGroupTable, reapOwner, registeredGroups } from './process-groups.js';
import { checkCgroupDir, createPoolCgroup, killCgroup, removeCgroup, removeChecksBaseIfEmpty, type Containment } from './check-cgroups.js';

export class CheckProcesses {
  /** Process groups of checks, shared with every worker (process-groups.ts). */
  readonly groups: Int32Array;
  /** Where the processes of this pool's checks are held: the pool's cgroup, or their process groups only. */
  readonly containment: Containment;
  /** Process groups killed because their worker died before it could. */
  reapedProcessGroups = 0;
  private cgroupErrorLogged = false;

  /** `capacity`: the pool's slots; `cgroups`: false to hold processes by process group only. */
  constructor(capacity: number, cgroups: boolean | undefined, private readonly log: Logger) {
    // Room for two groups per slot, and for the slots of a worker that died but is not reaped yet.
    this.groups = createGroupTable(Math.max(256, 2 * capacity));
    this.containment = cgroups === false ? { mode: 'process-group', reason: 'cgroups turned off for this pool' } : createPoolCgroup();
    if (this.containment.mode === 'cgroup') {
      this.log.info({ cgroup: this.containment.dir }, 'exec checks are contained in a cgroup each, killed as a whole (also what they detach with setsid)');
    } else {
      this.log.warn({ reason: this.containment.reason }, 'cgroups not writable: exec checks are killed by process group; a check that calls setsid can escape');
    }
  }

  /** What the workers need to register and contain their checks' processes. */
  workerData(): CheckWorkerData {
    return {
      vipcastGroups: this.groups,
      ...(this.containment.mode === 'cgroup' ? { vipcastCgroup: this.containment.dir } : {}),
    };
  }

  /** Process groups that checks own right now. */
  get count(): number {
    return registeredGroups(this.groups);
  }

  /** A worker could not put a check's process into its cgroup (logged once per pool). */
  cgroupError(threadId: number, error: string): void {
    if (this.cgroupErrorLogged) return;
    this.cgroupErrorLogged = true;
    this.log.warn({ threadId, error }, 'a check could not be put into its cgroup: it is held by its process group only');
  }

  /** Close the table and kill every group in it and the pool's cgroup, synchronously. Safe to call any number of times. */
  stopCommands(): void {
    closeTable(this.groups);
    // After the table is closed: a check that moved its process into its cgroup after this kill sees `closing` and
    // never releases its command (check-worker.ts).
    if (this.containment.mode === 'cgroup') killCgroup(this.containment.dir);
  }

  /** Kill the process groups a dead worker's checks left behind. */
  reap(threadId: number): void {
    const poolCgroup = this.containment.mode === 'cgroup' ? this.containment.dir : undefined;
    const alsoKill = poolCgroup === undefined ? undefined : (pgid: number): void => void removeCgroup(checkCgroupDir(poolCgroup, pgid), 5000);
    for (const pgid of reapOwner(this.groups, threadId, alsoKill)) {
      this.reapedProcessGroups++;
      this.log.warn({ pgid, threadId }, 'killed the process group of a check whose worker died');
    }
  }

  /** After the workers are gone: close the table, remove the pool's cgroup (and the base, `last` pool of the process). */
  async close(last: () => boolean): Promise<void> {
    closeTable(this.groups);
    if (this.containment.mode === 'cgroup') {
      // Killed and empty within moments; the daemon bounds close() at 1 s, and the next start removes what is left.
      if (!(await removeCgroup(this.containment.dir, 500))) this.log.warn({ cgroup: this.containment.dir }, 'check cgroup not removed: still exiting');
      if (last()) removeChecksBaseIfEmpty();
    }
  }
}
