/** The problem list every config check reports into: each problem starts with its key path. */
import { VipcastError } from '../errors.js';

/** A parsed scalar by key path ('agent.rise'). Here, not in scalars.ts, so a checker the schema imports can use it. */
export type Get = <T>(key: string) => T;

/** Several problems at once (a list with more than one bad item). */
export class ProblemList extends Error {
  constructor(readonly list: string[]) {
    super(list.join('\n'));
  }
}

export function messagesOf(err: unknown, fallbackPath: string): string[] {
  if (err instanceof ProblemList) return err.list;
  if (err instanceof VipcastError) return [err.message];
  // A third-party monitor plugin may throw a plain error without the key path.
  const text = err instanceof Error ? err.message : String(err);
  return [text.startsWith(fallbackPath) ? text : `${fallbackPath}: ${text}`];
}

export class Problems {
  readonly list: string[] = [];
  readonly warnings: string[] = [];

  add(path: string, message: string): void {
    this.list.push(`${path}: ${message}`);
  }

  /** Run a parser; on failure record its message(s) and return undefined. */
  try<T>(path: string, fn: () => T): T | undefined {
    try {
      return fn();
    } catch (err) {
      this.list.push(...messagesOf(err, path));
      return undefined;
    }
  }
}
