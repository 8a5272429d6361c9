/** Find processes by a marker, for tests that prove nothing vipcast started is left behind. */
import { readdirSync, readFileSync } from 'node:fs';

/** Live processes (zombies excluded, this process and `except` skipped) whose command line or environment contains `marker`. */
export function processesWith(marker: string, except?: number): number[] {
  const found: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid || Number(entry) === except) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      if (stat.slice(stat.lastIndexOf(')') + 2)[0] === 'Z') continue;
      if (readFileSync(`/proc/${entry}/cmdline`, 'utf8').includes(marker) || readFileSync(`/proc/${entry}/environ`, 'utf8').includes(marker)) {
        found.push(Number(entry));
      }
    } catch {
      // exited meanwhile
    }
  }
  return found;
}

/**
 * The process groups of the live processes carrying `marker`: one per exec check, however many of its processes are
 * caught at the moment (a shell that has forked but not yet exec'd `sleep` briefly shows the marker twice).
 */
export function processGroupsWith(marker: string, except?: number): number[] {
  const groups = new Set<number>();
  for (const pid of processesWith(marker, except)) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      groups.add(Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[2]));
    } catch {
      // exited meanwhile
    }
  }
  return [...groups];
}
