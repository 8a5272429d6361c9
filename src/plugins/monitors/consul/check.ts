/**
 * `consul` check (runs inside a check-pool worker) through vipcast's Consul HTTP client (../../consul-http.ts: node:http(s)
 * with TLS, a size limit and the check's AbortSignal). One keep-alive agent per scheme and TLS fingerprint, made
 * (and its files read) once per fingerprint in this worker. See index.ts for the semantics.
 */
import type http from 'node:http';
import type { CheckFunction, CheckResult } from '../../../plugin-api.js';
import { bexprString, connectError, consulAgent, consulGet, consulHeaders, consulUrl, oneLine, type HttpAnswer } from '../../consul-http.js';
import { byteOrder } from '../../discovery/consul/catalog.js';
import type { ConsulMonitorParams } from './index.js';

/** A check list is kilobytes; the filter asks for one node's. */
const MAX_BODY_BYTES = 8 * 1024 * 1024;
export const NODE_MAINTENANCE = '_node_maintenance';
export const SERVICE_MAINTENANCE = '_service_maintenance:';
/** The local agent's filter: this host's tagged services' checks, and the node's maintenance check. */
export const LOCAL_FILTER = `enable_gocast in ServiceTags or CheckID == ${bexprString(NODE_MAINTENANCE)}`;

interface ConsulCheck {
  Node?: string;
  CheckID?: string;
  Name?: string;
  Status?: string;
  Notes?: string;
  ServiceID?: string;
  ServiceName?: string;
}

/** Agents by scheme and TLS fingerprint; a reload that rotates certificates adds one, the oldest beyond MAX_AGENTS go. */
const agents = new Map<string, http.Agent>();
const MAX_AGENTS = 8;

function agentFor(p: ConsulMonitorParams): http.Agent {
  const key = `${p.addr.startsWith('https:') ? 'https' : 'http'}|${p.tls?.fingerprint ?? ''}`;
  let agent = agents.get(key);
  if (!agent) {
    agent = consulAgent({ addr: p.addr, tls: p.tls });
    agents.set(key, agent);
    for (const [old, a] of agents) {
      if (agents.size <= MAX_AGENTS) break;
      a.destroy();
      agents.delete(old);
    }
  }
  return agent;
}

class Down extends Error {}

async function read(p: ConsulMonitorParams, path: string, filter: string, what: string, signal: AbortSignal, timeoutMs: number): Promise<unknown> {
  let res: HttpAnswer;
  try {
    res = await consulGet(consulUrl(p, path, { filter }, p.stale && !p.local), consulHeaders(p), agentFor(p), signal, MAX_BODY_BYTES);
  } catch (err) {
    if (signal.aborted) throw new Down(`Consul ${what} timed out after ${timeoutMs} ms`);
    throw new Down(`Consul ${what} unreachable: ${connectError(err)}`);
  }
  if (res.status !== 200) {
    // Consul's error bodies are short text ("ACL not found"); keep a line of it (it never holds the token).
    const body = oneLine(res.text);
    const hint = res.status === 403 ? ' (check agent.consul_token / CONSUL_TOKEN)' : '';
    throw new Down(`Consul ${what} answered ${res.status}${body ? `: ${body}` : ''}${hint}`);
  }
  try {
    return JSON.parse(res.text);
  } catch {
    throw new Down(`Consul ${what} answered with invalid JSON`);
  }
}

/** The checks of an answer (a list, or the agent's map; `null` = none), in CheckID order. */
function list(body: unknown, what: string): ConsulCheck[] {
  if (body === null) return [];
  if (typeof body !== 'object') throw new Down(`Consul ${what} answered ${JSON.stringify(body)?.slice(0, 80)}, not checks`);
  const values = Array.isArray(body) ? body : Object.values(body as Record<string, unknown>);
  return (values.filter((c) => c !== null && typeof c === 'object') as ConsulCheck[])
    .sort((a, b) => byteOrder(String(a.CheckID ?? ''), String(b.CheckID ?? '')) || byteOrder(String(a.ServiceID ?? ''), String(b.ServiceID ?? '')));
}

/**
 * Node maintenance first, then service maintenance, then every check of every instance of the service on the node
 * must be passing. `checks` is already this node's.
 */
function decide(checks: ConsulCheck[], where: string, service: string): CheckResult {
  const notes = (c: ConsulCheck): string => (c.Notes ? `: ${oneLine(c.Notes)}` : '');
  const node = checks.find((c) => c.CheckID === NODE_MAINTENANCE);
  if (node) return { ok: false, reason: `Consul node "${node.Node ?? '?'}" is in maintenance mode${notes(node)}` };
  const mine = checks.filter((c) => c.ServiceName === service);
  const maint = mine.find((c) => String(c.CheckID ?? '').startsWith(SERVICE_MAINTENANCE));
  if (maint) return { ok: false, reason: `Consul service "${service}" (ID "${maint.ServiceID ?? '?'}") is in maintenance mode${notes(maint)}` };
  if (mine.length === 0) return { ok: false, reason: `no Consul check for service "${service}" ${where}` };
  const bad = mine.find((c) => c.Status !== 'passing');
  if (bad) return { ok: false, reason: `Consul check "${bad.Name ?? bad.CheckID ?? '?'}" of service "${service}" is ${bad.Status ?? 'without status'}` };
  const names = mine.map((c) => `"${c.Name ?? c.CheckID ?? '?'}"`).join(', ');
  return { ok: true, reason: `Consul check${mine.length > 1 ? 's' : ''} ${names} of service "${service}" passing` };
}

export const check: CheckFunction = async (params, ctx) => {
  const p = params as ConsulMonitorParams;
  try {
    if (p.local) {
      const body = await read(p, '/agent/checks', LOCAL_FILTER, 'agent /agent/checks', ctx.signal, ctx.timeoutMs);
      if (body === null || typeof body !== 'object' || Array.isArray(body)) throw new Down(`Consul agent /agent/checks answered ${JSON.stringify(body)?.slice(0, 80)}, not a map of checks`);
      return decide(list(body, 'agent /agent/checks'), 'on the local agent', p.service);
    }
    // Two reads at once: the service's checks on this node, and the node's maintenance check (a node check, which
    // /health/checks/{service} never lists). The Node test is kept client-side too: an old Consul ignores `filter`.
    const svcWhat = `/health/checks/${p.service}`;
    const nodeWhat = `/health/node/${p.node}`;
    const [svc, node] = await Promise.all([
      read(p, `/health/checks/${encodeURIComponent(p.service)}`, `Node == ${bexprString(p.node)}`, svcWhat, ctx.signal, ctx.timeoutMs),
      read(p, `/health/node/${encodeURIComponent(p.node)}`, `CheckID == ${bexprString(NODE_MAINTENANCE)}`, nodeWhat, ctx.signal, ctx.timeoutMs),
    ]);
    if (svc !== null && !Array.isArray(svc)) throw new Down(`Consul ${svcWhat} answered ${JSON.stringify(svc).slice(0, 80)}, not a list of checks`);
    const checks = [...list(node, nodeWhat).filter((c) => c.CheckID === NODE_MAINTENANCE), ...list(svc, svcWhat)];
    return decide(checks.filter((c) => c.Node === p.node), `on node "${p.node}"`, p.service);
  } catch (err) {
    if (err instanceof Down) return { ok: false, reason: err.message };
    // consulAgent: a TLS file that can't be read now (the message names the file, never its content).
    return { ok: false, reason: (err as Error).message };
  }
};

export default check;
