/** The daemon's stop sequence helpers: every close in a stop (or a replaced pool's close) runs within a bound. */
import type { Logger } from './logger.js';

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
