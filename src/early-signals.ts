/**
 * The first thing vipcast does in its process (bin/vipcast.js imports this module before anything else): take
 * SIGHUP away from its default action, which ends the process. Loading the daemon's modules takes a good part of a
 * second on a busy host, and config management or systemd may send a reload as soon as the process exists; without
 * this, that reload would kill the daemon.
 *
 * A SIGHUP that arrives before the command has installed its own handler is remembered. `vipcast run` takes the
 * remembered ones over (they become one reload once the daemon runs); every other command releases them, and a
 * SIGHUP it received then ends it as the default action would have.
 *
 * SIGTERM and SIGINT keep their default action until `vipcast run` installs its handlers: before that nothing has
 * been done that would need undoing. This module imports nothing (it must stay cheap to load).
 */

/** When each early SIGHUP arrived (ms since the process started, for the log). */
const received: number[] = [];
const record = (): void => {
  received.push(Math.round(process.uptime() * 1000));
};
let installed = false;

/** Install the recording SIGHUP handler (idempotent). */
export function installEarlySignals(): void {
  if (installed) return;
  installed = true;
  process.on('SIGHUP', record);
}

/**
 * Remove the recording handler and return the SIGHUPs it recorded (arrival times). Call after the command's own
 * SIGHUP handler is installed, so there is no moment with the default action.
 */
export function takeEarlySignals(): number[] {
  process.removeListener('SIGHUP', record);
  installed = false;
  return received.splice(0);
}

/** For commands that do not handle SIGHUP: back to the default action; one that already came ends the process now. */
export function releaseEarlySignals(): void {
  const pending = takeEarlySignals();
  if (pending.length > 0 && process.listenerCount('SIGHUP') === 0) process.kill(process.pid, 'SIGHUP');
}

installEarlySignals();
