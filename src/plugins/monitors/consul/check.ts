/**
 * `consul` check (runs inside a check-pool worker, plain fetch: no client state to keep in a worker, and the
 * AbortSignal of the check is all the timeout handling needed). See index.ts for the semantics.
 */
import type { CheckFunction, CheckResult } from '../../../plugin-api.js';
import type { ConsulMonitorParams } from './index.js';

interface ConsulCheck {
  Node?: string;
  CheckID?: string;
  Name?: string;
  Status?: string;
  ServiceName?: string;
}

/** Consul's error bodies are short text ("ACL not found"); keep a line of it, never the request (it has no token anyway). */
async function failure(res: Response, what: string): Promise<CheckResult> {
  const body = (await res.text().catch(() => '')).trim().split('\n')[0]!.slice(0, 200);
  const hint = res.status === 403 ? ' (check agent.consul_token / CONSUL_TOKEN)' : '';
  return { ok: false, reason: `Consul ${what} answered ${res.status}${body ? `: ${body}` : ''}${hint}` };
}

function decide(checks: ConsulCheck[], where: string, service: string): CheckResult {
  if (checks.length === 0) return { ok: false, reason: `no Consul check for service "${service}" ${where}` };
  const bad = checks.find((c) => c.Status !== 'passing');
  if (bad) return { ok: false, reason: `Consul check "${bad.Name ?? bad.CheckID ?? '?'}" of service "${service}" is ${bad.Status ?? 'without status'}` };
  const names = checks.map((c) => `"${c.Name ?? c.CheckID ?? '?'}"`).join(', ');
  return { ok: true, reason: `Consul check${checks.length > 1 ? 's' : ''} ${names} of service "${service}" passing` };
}

export const check: CheckFunction = async (params, ctx) => {
  const p = params as ConsulMonitorParams;
  const headers: Record<string, string> = { accept: 'application/json' };
  if (p.token) headers['X-Consul-Token'] = p.token;
  const url = p.local
    ? `${p.addr}/agent/checks?filter=${encodeURIComponent('enable_gocast in ServiceTags')}`
    : `${p.addr}/health/checks/${encodeURIComponent(p.service)}${p.stale ? '?stale' : ''}`;
  const what = p.local ? 'agent /agent/checks' : `/health/checks/${p.service}`;
  let res: Response;
  try {
    res = await fetch(url, { headers, signal: ctx.signal });
  } catch (err) {
    if (ctx.signal.aborted) return { ok: false, reason: `Consul ${what} timed out after ${ctx.timeoutMs} ms` };
    const e = err as Error & { cause?: { code?: string; message?: string } };
    return { ok: false, reason: `Consul ${what} unreachable: ${e.cause?.code ?? e.cause?.message ?? e.message}` };
  }
  if (res.status !== 200) return failure(res, what);
  let body: unknown;
  try {
    body = await res.json();
  } catch (err) {
    if (ctx.signal.aborted) return { ok: false, reason: `Consul ${what} timed out after ${ctx.timeoutMs} ms` };
    return { ok: false, reason: `Consul ${what} answered with invalid JSON` };
  }
  if (p.local) {
    if (body === null || typeof body !== 'object' || Array.isArray(body)) return { ok: false, reason: `Consul ${what} answered ${JSON.stringify(body)?.slice(0, 80)}, not a map of checks` };
    const checks = Object.values(body as Record<string, ConsulCheck>).filter((c) => c !== null && typeof c === 'object' && c.ServiceName === p.service);
    return decide(checks, 'on the local agent', p.service);
  }
  if (body === null) return decide([], `on node "${p.node}"`, p.service);
  if (!Array.isArray(body)) return { ok: false, reason: `Consul ${what} answered ${JSON.stringify(body).slice(0, 80)}, not a list of checks` };
  const checks = (body as ConsulCheck[]).filter((c) => c !== null && typeof c === 'object' && c.Node === p.node);
  return decide(checks, `on node "${p.node}"`, p.service);
};

export default check;
