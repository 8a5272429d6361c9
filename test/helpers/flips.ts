/** Timing a control app's route flips in a daemon's log (the plugin containment and fault tests). */
import type { Server } from 'node:net';
import { closeServer, serve, type DaemonProcess, type LogLine } from './daemon.js';

/** A predicate for the daemon's route log line: `action` (announce, withdraw) of `prefix`. */
export const isRoute = (action: string, prefix: string) => (l: LogLine) => l.event === 'route' && l.action === action && l.prefix === prefix;

/** How long after `since` the first line matching `pred` (from line `from`) came; Infinity when none within 5 s. */
export async function took(d: DaemonProcess, pred: (l: LogLine) => boolean, since: number, from: number): Promise<number> {
  try {
    return Math.round((await d.waitLine(pred, 5000, 'a route event', from)).at - since);
  } catch {
    return Infinity;
  }
}

/**
 * Flip a port-checked app `flips` times: open a listener on `port` (time to the announce of `prefix`), wait, close it
 * (time to the withdraw). Returns both lists of times, ms (Infinity: not within 5 s).
 */
export async function timeFlips(
  t: { teardown(fn: () => unknown): void },
  d: DaemonProcess,
  port: number,
  prefix: string,
  flips: number,
): Promise<{ withdrawMs: number[]; announceMs: number[] }> {
  const withdrawMs: number[] = [];
  const announceMs: number[] = [];
  for (let i = 0; i < flips; i++) {
    let from = d.lines.length;
    const server: Server = await serve(t, port);
    const opened = performance.now();
    announceMs.push(await took(d, isRoute('announce', prefix), opened, from));
    // Let a few rounds of the bad plugins pass between flips.
    await new Promise((r) => setTimeout(r, 300 + 100 * i));
    from = d.lines.length;
    await closeServer(server);
    const closed = performance.now();
    withdrawMs.push(await took(d, isRoute('withdraw', prefix), closed, from));
    await new Promise((r) => setTimeout(r, 300));
  }
  return { withdrawMs, announceMs };
}
