/** The daemon's stop sequence helpers: every close in a stop (or a replaced pool's close) runs within a bound. */
import type { Logger } from './logger.js';
import { SHUTDOWN_SPEAKER_RESERVE_MS, type ShutdownDeadline } from './shutdown-steps.js';

/** Past the deadline, how long the withdraw and cleanup and the speaker stop may still run: the forced exit is 2 s on. */
const STOP_OVERRUN_MS = 1000;
/** The least a close is given when the deadline is near or past: none at all would cut a file write short. */
const CLOSE_FLOOR_MS = 100;
/** The least the speaker stop (and the withdraw's outer bound) is given when the deadline is past. */
const SPEAKER_FLOOR_MS = 200;

/**
 * The bounds of a stop's steps, cut to what `deadline` leaves. The withdraw and cleanup bound their own steps to the
 * deadline less the reserves; this outer bound only stops a hung one from holding the stop past the deadline (plus
 * STOP_OVERRUN_MS, for a host cleanup that waits out its own NAT bound). The closes that follow (reload, API, files,
 * discoveries, pools) end before the speaker's reserve; the speaker stop gets at most 3 s, and no more than the
 * overrun past the deadline.
 */
export const stopBounds = {
  withdrawAndCleanup: (deadline: ShutdownDeadline): number => Math.max(SPEAKER_FLOOR_MS, deadline.left(-STOP_OVERRUN_MS)),
  close: (deadline: ShutdownDeadline, max = 1000): number => Math.max(CLOSE_FLOOR_MS, deadline.left(SHUTDOWN_SPEAKER_RESERVE_MS, max)),
  speakerStop: (deadline: ShutdownDeadline): number => Math.max(SPEAKER_FLOOR_MS, deadline.left(-STOP_OVERRUN_MS, 3000)),
};

/** Wait for `p` at most `ms`; a failure or a timeout is logged (naming `what`), never thrown. */
export async function withTimeout(p: Promise<unknown>, ms: number, what: string, log: Logger): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<void>((resolve) => {
    timer = setTimeout(() => {
      log.error({ what, ms }, 'close timed out');
      resolve();
    }, ms);
  });
  try {
    await Promise.race([p.then(() => undefined, (err) => log.error({ err, what }, 'close failed')), timeout]);
  } finally {
    clearTimeout(timer);
  }
}
