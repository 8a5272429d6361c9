/**
 * `http` check (runs inside a check-pool worker): one GET with the global fetch, aborted by the check's signal.
 * Up when the status is in `expectStatus`, or in 200..399 when that list is empty. Redirects are not followed: a 3xx
 * is the service's own answer.
 */
import type { CheckFunction, CheckResult } from '../../../plugin-api.js';
import type { HttpParams } from './index.js';
import { describeError } from '../../../core/check-worker.js';

function describeFetchError(err: unknown): string {
  // undici reports "fetch failed" and keeps the socket error (ECONNREFUSED ...) in `cause`.
  const cause = (err as { cause?: unknown }).cause;
  return describeError(cause instanceof Error ? cause : err instanceof Error ? err.message : err);
}

export const check: CheckFunction = async (params, ctx): Promise<CheckResult> => {
  const { url, expectStatus } = params as HttpParams;
  let res: Response;
  try {
    res = await fetch(url, { method: 'GET', redirect: 'manual', signal: ctx.signal, headers: { 'user-agent': 'vipcast-health-check' } });
  } catch (err) {
    if (ctx.signal.aborted) return { ok: false, reason: `GET ${url} timed out after ${ctx.timeoutMs} ms` };
    return { ok: false, reason: `GET ${url} failed: ${describeFetchError(err)}` };
  }
  // The body is not needed; cancelling it frees the connection for the next check.
  res.body?.cancel().catch(() => {});
  const ok = expectStatus.length > 0 ? expectStatus.includes(res.status) : res.status >= 200 && res.status <= 399;
  return { ok, reason: `HTTP ${res.status}` };
};

export default check;
