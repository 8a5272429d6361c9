/**
 * The process-group table of a check pool: shared memory (a SharedArrayBuffer) that the pool creates and hands to
 * every worker in `workerData`, so the main thread knows every process group a check owns from the moment it exists,
 * without a message that a dying worker might never send.
 *
 * Layout (Int32): word 0 is the `closing` flag; then one slot of two words per group: owner thread id (0: free) and
 * pgid. A check registers a group before the command in it may run (see the exec check's gate), then reads `closing`;
 * `closeTable` sets `closing`, then reads every slot. All accesses are sequentially consistent (Atomics), so either the
 * check sees `closing` (and kills its group itself, never starting the command) or the main thread sees the slot (and
 * kills the group): no group can slip between the two.
 */

const CLOSING = 0;
const HEADER = 1;
const OWNER = 0;
const PGID = 1;

/** Why a group could not be registered: the pool is stopping, or every slot is taken. */
export type RegisterRefusal = 'closing' | 'full';

/** A table with room for `slots` process groups. */
export function createGroupTable(slots: number): Int32Array {
  return new Int32Array(new SharedArrayBuffer((HEADER + 2 * slots) * Int32Array.BYTES_PER_ELEMENT));
}

function slotCount(table: Int32Array): number {
  return (table.length - HEADER) >> 1;
}

/**
 * Register `pgid` as owned by thread `owner` (worker side). Returns the slot to pass to `unregisterGroup`, or why it
 * was refused; on a refusal the caller must kill the group and not let its command run.
 */
export function registerGroup(table: Int32Array, owner: number, pgid: number): number | RegisterRefusal {
  if (Atomics.load(table, CLOSING) !== 0) return 'closing';
  for (let slot = 0; slot < slotCount(table); slot++) {
    const at = HEADER + 2 * slot;
    if (Atomics.compareExchange(table, at + OWNER, 0, owner) !== 0) continue;
    Atomics.store(table, at + PGID, pgid);
    // Read after the slot is visible: a closeTable that set the flag before this read will see the slot (and kill
    // the group); one that sets it after finds the slot too. Either way the group dies.
    if (Atomics.load(table, CLOSING) !== 0) {
      unregisterGroup(table, slot, pgid);
      return 'closing';
    }
    return slot;
  }
  return 'full';
}

/** Free a slot once its group is dead (worker side). */
export function unregisterGroup(table: Int32Array, slot: number, pgid: number): void {
  const at = HEADER + 2 * slot;
  if (Atomics.compareExchange(table, at + PGID, pgid, 0) === pgid) Atomics.store(table, at + OWNER, 0);
}

/** True once `closeTable` ran: no command may start any more. */
export function tableClosing(table: Int32Array): boolean {
  return Atomics.load(table, CLOSING) !== 0;
}

/** SIGKILL a process group; false when it was already gone. */
export function killGroup(pgid: number): boolean {
  try {
    process.kill(-pgid, 'SIGKILL');
    return true;
  } catch {
    return false; // ESRCH: the group is empty.
  }
}

/**
 * Main thread: forbid new groups, then kill every registered one (synchronous). The slots stay: each check frees its
 * own when it finishes; a dead worker's are freed by `reapOwner`. Returns the pgids signalled.
 */
export function closeTable(table: Int32Array): number[] {
  Atomics.store(table, CLOSING, 1);
  const killed: number[] = [];
  for (let slot = 0; slot < slotCount(table); slot++) {
    const pgid = Atomics.load(table, HEADER + 2 * slot + PGID);
    if (pgid !== 0 && killGroup(pgid)) killed.push(pgid);
  }
  return killed;
}

/**
 * Main thread: kill and free every group of a thread that is gone (it cannot do it any more). `alsoKill` is called
 * with every registered pgid, even one whose group is already empty (a process that left it may live on: see
 * check-cgroups.ts). Returns the pgids killed.
 */
export function reapOwner(table: Int32Array, owner: number, alsoKill?: (pgid: number) => void): number[] {
  const killed: number[] = [];
  for (let slot = 0; slot < slotCount(table); slot++) {
    const at = HEADER + 2 * slot;
    if (Atomics.load(table, at + OWNER) !== owner) continue;
    const pgid = Atomics.load(table, at + PGID);
    if (pgid !== 0 && killGroup(pgid)) killed.push(pgid);
    if (pgid !== 0) alsoKill?.(pgid);
    Atomics.store(table, at + PGID, 0);
    Atomics.store(table, at + OWNER, 0);
  }
  return killed;
}

/** Groups registered right now (for stats and tests). */
export function registeredGroups(table: Int32Array): number {
  let n = 0;
  for (let slot = 0; slot < slotCount(table); slot++) if (Atomics.load(table, HEADER + 2 * slot + PGID) !== 0) n++;
  return n;
}
