/** A real pino logger whose JSON lines the test reads back (debug level and up). */
import { Writable } from 'node:stream';
import { createLogger } from '../../src/core/logger.js';

export function captureLog(): { log: ReturnType<typeof createLogger>; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = [];
  const destination = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const l of chunk.toString().split('\n')) if (l.trim()) lines.push(JSON.parse(l) as Record<string, unknown>);
      cb();
    },
  });
  return { log: createLogger({ destination, pretty: false, level: 'debug' }), lines };
}
