/**
 * `vipcast status`: the running daemon's GET /status as a readable table (apps, state, reason, routes, peers, last
 * reload), or the raw JSON with --json. The address is --api ADDR, else agent.listen_addr of the config file (-c);
 * a unix: address is read through the socket. /status is read-only, so no token is needed. Loads no dependency but
 * the config parser (when -c is used).
 */
import { request } from 'node:http';
import { splitListen } from './core/listen-addr.js';

interface AppRow { name: string; source: string; state: string; reason: string; announced: string[]; error?: string; held?: { reason: string } }
interface PeerRow { address: string; asn: number; state: string; uptimeSeconds: number; prefixesSent: number; prefixesReceived: number }
interface Status {
  started_at: string;
  config_file: string;
  routing: string;
  apps: AppRow[];
  peers: PeerRow[] | { error: string };
  last_reload?: { ok: boolean; trigger: string; at: string; errors: string[]; changes: string[] };
  maintenance?: { host: MaintenanceView | null };
}

/** Where to reach the API: a TCP host and port (a wildcard listen address is reached on loopback) or a unix socket. */
export function apiTarget(listenAddr: string): { socketPath: string } | { host: string; port: number } {
  if (listenAddr.startsWith('unix:')) return { socketPath: listenAddr.slice('unix:'.length) };
  const { host, port } = splitListen(listenAddr);
  return { host: host === '::' || host === '0.0.0.0' ? '127.0.0.1' : host, port };
}

/** GET /status; rejects with a message naming the address when the daemon can't be reached or answers an error. */
export function fetchStatus(listenAddr: string, timeoutMs = 5000): Promise<{ body: string; status: Status }> {
  const target = apiTarget(listenAddr);
  return new Promise((resolve, reject) => {
    const req = request({ ...target, path: '/status', method: 'GET', timeout: timeoutMs }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (c: string) => (body += c)).on('end', () => {
        if (res.statusCode !== 200) return reject(new Error(`${listenAddr}: /status answered ${res.statusCode}: ${body.slice(0, 200)}`));
        try {
          resolve({ body, status: JSON.parse(body) as Status });
        } catch {
          reject(new Error(`${listenAddr}: /status is not JSON`));
        }
      });
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on('error', (err) => reject(new Error(`cannot reach the vipcast API at ${listenAddr}: ${err.message}`)));
    req.end();
  });
}

/** Columns padded to their widest cell; the last column is not padded. */
function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  return [header, ...rows].map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  ').trimEnd()).join('\n');
}

/** Why an app is (not) announced: held down (maintenance, flap damping) wins over the checks' reason. */
function appReason(a: AppRow): string {
  const reason = a.held ? `held down: ${a.held.reason}` : a.reason;
  return a.error ? `${reason} (error: ${a.error})` : reason;
}

/** The readable form of /status. */
export function formatStatus(s: Status): string {
  const out: string[] = [`routing ${s.routing}, config ${s.config_file}, running since ${s.started_at}`, ''];
  if (s.maintenance?.host) out.splice(1, 0, `host-wide maintenance: ON (${describeMaintenance(s.maintenance.host)}): no app is announced`);
  const apps = [...s.apps].sort((a, b) => a.name.localeCompare(b.name));
  out.push(apps.length === 0 ? 'no apps' : table(['APP', 'SOURCE', 'STATE', 'ROUTES', 'REASON'],
    apps.map((a) => [a.name, a.source, a.state, a.announced.length ? a.announced.join(',') : '-', appReason(a)])));
  out.push('');
  if (Array.isArray(s.peers)) {
    out.push(s.peers.length === 0 ? 'no peers' : table(['PEER', 'AS', 'STATE', 'UPTIME', 'SENT', 'RECEIVED'],
      s.peers.map((p) => [p.address, String(p.asn), p.state, `${p.uptimeSeconds}s`, String(p.prefixesSent), String(p.prefixesReceived)])));
  } else {
    out.push(`peers: ${s.peers.error}`);
  }
  const r = s.last_reload;
  out.push('', r === undefined ? 'last reload: none since start'
    : `last reload: ${r.ok ? 'ok' : 'FAILED'} at ${r.at} (${r.trigger})${r.changes.length ? `: ${r.changes.join('; ')}` : ''}${r.errors.length ? `; errors: ${r.errors.join('; ')}` : ''}`);
  return out.join('\n');
}

// ---------------------------------------------------------------------------------------------------------------------
// `vipcast maintenance`

interface MaintenanceView { since: string; by: string; caller?: string; file?: string; host_wide?: boolean }
interface MaintenanceList {
  host: { api?: MaintenanceView; file?: MaintenanceView } | null;
  apps: Record<string, { api?: MaintenanceView; file?: MaintenanceView; registered: boolean }>;
  in_maintenance: string[];
}

/** A request to the daemon's API (TCP or unix socket), with the bearer token when there is one; any answer resolves. */
export function apiRequest(listenAddr: string, method: string, path: string, token = '', timeoutMs = 5000): Promise<{ code: number; body: string }> {
  const target = apiTarget(listenAddr);
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = token ? { authorization: `Bearer ${token}` } : {};
    const req = request({ ...target, path, method, headers, timeout: timeoutMs }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (c: string) => (body += c)).on('end', () => resolve({ code: res.statusCode ?? 0, body }));
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on('error', (err) => reject(new Error(`cannot reach the vipcast API at ${listenAddr}: ${err.message}`)));
    req.end();
  });
}

function describeMaintenance(m: MaintenanceView): string {
  return `${m.by === 'file' ? `file ${m.file}` : `${m.by}${m.caller ? `, ${m.caller}` : ''}`}, since ${m.since}`;
}

/** The readable form of GET /maintenance. */
export function formatMaintenance(l: MaintenanceList): string {
  const host = [l.host?.api, l.host?.file].filter((m): m is MaintenanceView => m !== undefined);
  const out = [host.length ? `host-wide maintenance: ON (${host.map(describeMaintenance).join('; ')}): every app` : 'host-wide maintenance: off'];
  const rows = Object.entries(l.apps).sort(([a], [b]) => a.localeCompare(b)).flatMap(([name, e]) =>
    [e.api, e.file].filter((m): m is MaintenanceView => m !== undefined).map((m) => [name, m.by, m.since, (m.by === 'file' ? m.file : m.caller) ?? '', e.registered ? '' : '(not registered)']));
  out.push('', rows.length ? table(['APP', 'BY', 'SINCE', 'WHO/FILE', ''], rows) : 'no app has a maintenance of its own');
  out.push('', `apps in maintenance now: ${l.in_maintenance.length ? l.in_maintenance.join(', ') : 'none'}`);
  return out.join('\n');
}

/** The readable answer of POST /maintenance. */
export function formatMaintenanceChange(b: { app: string; state: string; maintenance: MaintenanceView | null; note?: string }): string {
  const what = b.app === '*' ? 'host-wide (every app)' : b.app;
  if (b.state === 'on') return `${what}: maintenance on${b.maintenance ? ` (${describeMaintenance(b.maintenance)})` : ''}`;
  return `${what}: maintenance off${b.note ? `; ${b.note}` : ''}`;
}
