/** pino logger factory: JSON lines, or pino-pretty when stdout is a terminal. Secrets are redacted by key name. */
import { pino, type Logger } from 'pino';

export type { Logger };

export const REDACT_PATHS = [
  'md5Password', '*.md5Password', '*.*.md5Password', 'password', '*.password', 'token', '*.token', 'consulToken',
  '*.consulToken', 'auth_password', '*.auth_password', '*.*.auth_password',
];

export function createLogger(opts: { level?: string; pretty?: boolean; destination?: NodeJS.WritableStream } = {}): Logger {
  const level = opts.level ?? 'info';
  const redact = { paths: REDACT_PATHS, censor: '[redacted]' };
  if (opts.pretty ?? (process.stdout.isTTY === true && opts.destination === undefined)) {
    return pino({ level, redact, transport: { target: 'pino-pretty', options: { colorize: true, translateTime: 'SYS:HH:MM:ss.l' } } });
  }
  return pino({ level, redact, base: { pid: process.pid } }, (opts.destination ?? pino.destination({ sync: true })) as pino.DestinationStream);
}

/** A logger that drops everything (tests, benchmarks). */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
