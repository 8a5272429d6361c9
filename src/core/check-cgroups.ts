/**
 * Containment of exec checks in cgroups (cgroup v2). A process group does not hold a check: a command that calls
 * `setsid` (a daemon that detaches) leaves it, and a process-group kill misses it. A cgroup does: every process the
 * command forks stays in it, whatever it does with sessions and groups, and writing "1" to its `cgroup.kill` (Linux
 * 5.14) kills all of them at once, forks in progress included.
 *
 * Layout, below the cgroup vipcast itself runs in (`0::PATH` in /proc/self/cgroup, under the cgroup2 mount):
 *
 *     <own cgroup>/vipcast-checks-<pid>/pool-<n>/pg-<pgid>
 *
 * One `vipcast-checks-<pid>` per vipcast process, one `pool-<n>` per check pool (killed as a whole when the pool stops
 * its commands, at shutdown and at process exit), one `pg-<pgid>` per running check (killed at the check's timeout and
 * when it ends; removed once empty). Below its own cgroup rather than at the hierarchy's root, so that under systemd the
 * checks stay inside vipcast's unit (`Delegate=yes` hands that subtree to vipcast), and stopping the unit kills them even
 * after a SIGKILL of vipcast. The "no internal processes" rule does not stand in the way: it only forbids processes in
 * a cgroup that enables controllers for its children, and vipcast enables none. Per pid, so that two vipcast processes
 * on one host (tests, a second instance) never kill each other's checks; at start, the trees of vipcast processes that
 * are gone (or had this pid before: a container restarts with the same pid) are killed and removed.
 *
 * Where no cgroup can be made (no cgroup2 mount, read-only, not root, kernel without `cgroup.kill`) checks are killed by
 * process group only, and the pool logs so at start.
 */
import { accessSync, constants, existsSync, mkdirSync, readdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/** How a pool's checks are held: in a cgroup of their own, or only by process group (and why). */
export type Containment = { readonly mode: 'cgroup'; readonly dir: string } | { readonly mode: 'process-group'; readonly reason: string };

const PREFIX = 'vipcast-checks-';

let base: { dir: string } | { reason: string } | undefined;
let nextPool = 1;

/** Unescape a path field of /proc/self/mounts (spaces and the like are written as \040). */
function unescapeMount(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}

/** The directory of this process's own cgroup v2, or why there is none. */
export function ownCgroupDir(): { dir: string } | { reason: string } {
  let mount: string | undefined;
  let path: string | undefined;
  try {
    for (const line of readFileSync('/proc/self/mounts', 'utf8').split('\n')) {
      const fields = line.split(' ');
      if (fields[2] === 'cgroup2') {
        mount = unescapeMount(fields[1]!);
        break;
      }
    }
    path = readFileSync('/proc/self/cgroup', 'utf8').split('\n').find((l) => l.startsWith('0::'))?.slice(3);
  } catch (err) {
    return { reason: `cannot read /proc: ${(err as Error).message}` };
  }
  if (mount === undefined) return { reason: 'no cgroup2 file system is mounted' };
  if (path === undefined || !path.startsWith('/')) return { reason: 'this process is in no cgroup v2 (/proc/self/cgroup has no 0:: line)' };
  const dir = join(mount, path);
  if (!existsSync(join(dir, 'cgroup.procs'))) return { reason: `own cgroup ${dir} is not visible here` };
  return { dir };
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * This process's `vipcast-checks-<pid>` (created, and probed once: later calls return the first answer). Trees left by
 * vipcast processes that are gone are killed on the way (their removal finishes in the background).
 */
function checksBase(): { dir: string } | { reason: string } {
  if (base !== undefined) return base;
  const own = ownCgroupDir();
  if ('reason' in own) return (base = own);
  const stale: string[] = [];
  for (const name of safeReaddir(own.dir)) {
    if (!name.startsWith(PREFIX)) continue;
    const pid = Number(name.slice(PREFIX.length));
    if (Number.isInteger(pid) && pid > 0 && (pid === process.pid || !alive(pid))) stale.push(join(own.dir, name));
  }
  // Synchronously, and only at the first pool of a process (and only when something was left): a removal still going
  // on in the background could take the new (still empty) pool cgroup of this pid along.
  for (const dir of stale) killCgroup(dir);
  const until = Date.now() + 1000;
  for (const dir of stale) {
    while (!(!populated(dir) && removeTree(dir)) && Date.now() < until) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 10);
  }
  const dir = join(own.dir, `${PREFIX}${process.pid}`);
  try {
    // Moving a process from vipcast's cgroup into one below needs write access to their common ancestor's procs file.
    accessSync(join(own.dir, 'cgroup.procs'), constants.W_OK);
    mkdirSync(dir, { recursive: true });
  } catch (err) {
    return (base = { reason: `cannot make a cgroup in ${own.dir}: ${(err as Error).message}` });
  }
  if (!existsSync(join(dir, 'cgroup.kill'))) {
    tryRmdir(dir);
    return (base = { reason: 'the kernel has no cgroup.kill (Linux 5.14 or later is needed)' });
  }
  return (base = { dir });
}

/** Make the cgroup of a new check pool, or say why checks are held by process group only. */
export function createPoolCgroup(): Containment {
  const at = checksBase();
  if ('reason' in at) return { mode: 'process-group', reason: at.reason };
  const dir = join(at.dir, `pool-${nextPool++}`);
  try {
    // The base again: the last pool to close removes it.
    mkdirSync(dir, { recursive: true });
  } catch (err) {
    return { mode: 'process-group', reason: `cannot make cgroup ${dir}: ${(err as Error).message}` };
  }
  return { mode: 'cgroup', dir };
}

/** The cgroup of the check whose process group is `pgid`, in the pool cgroup `poolDir`. */
export function checkCgroupDir(poolDir: string, pgid: number): string {
  return join(poolDir, `pg-${pgid}`);
}

/**
 * Move process `pid` (still held at the exec gate) into cgroup `dir`, made if missing. A cgroup of the same name may be
 * left by an earlier check whose pid was reused and be removed under us: then it is made again. Throws on failure.
 */
export function placeInCgroup(dir: string, pid: number): void {
  for (let attempt = 0; ; attempt++) {
    try {
      mkdirSync(dir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    try {
      writeFileSync(join(dir, 'cgroup.procs'), String(pid));
      return;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || attempt >= 3) throw err;
    }
  }
}

/** SIGKILL every process in cgroup `dir` and below (synchronous). False when the cgroup is gone. */
export function killCgroup(dir: string): boolean {
  try {
    writeFileSync(join(dir, 'cgroup.kill'), '1');
    return true;
  } catch {
    return false;
  }
}

function populated(dir: string): boolean {
  try {
    return /^populated 1$/m.test(readFileSync(join(dir, 'cgroup.events'), 'utf8'));
  } catch {
    return false;
  }
}

function safeReaddir(dir: string): string[] {
  try {
    return readdirSync(dir, { withFileTypes: true }).filter((e) => e.isDirectory()).map((e) => e.name);
  } catch {
    return [];
  }
}

function tryRmdir(dir: string): boolean {
  try {
    rmdirSync(dir);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ENOENT';
  }
}

/** Remove `dir` and the cgroups below it, deepest first; true when all are gone. */
function removeTree(dir: string): boolean {
  for (const child of safeReaddir(dir)) removeTree(join(dir, child));
  return tryRmdir(dir);
}

/**
 * Kill everything in cgroup `dir` and remove it (with the cgroups below) once it is empty: the kill is delivered at
 * once, but a cgroup can only be removed after its processes have finished exiting. Gives up after `withinMs`
 * (the next start of vipcast removes what is left). True when it is gone.
 */
export async function removeCgroup(dir: string, withinMs: number): Promise<boolean> {
  const until = Date.now() + withinMs;
  killCgroup(dir);
  for (;;) {
    if (!populated(dir) && removeTree(dir)) return true;
    if (Date.now() >= until) return false;
    await new Promise<void>((resolve) => setTimeout(resolve, 10).unref());
  }
}

/** Remove this process's `vipcast-checks-<pid>` if no pool cgroup is left in it (the last pool has closed). */
export function removeChecksBaseIfEmpty(): void {
  if (base !== undefined && 'dir' in base) tryRmdir(base.dir);
}
