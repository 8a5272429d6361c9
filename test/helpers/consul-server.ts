/**
 * A Consul HTTP API test server (node:http on 127.0.0.1) answering the endpoints vipcast uses with Consul's real JSON
 * shapes and behaviour:
 * - GET /v1/catalog/node/:node -> `{ Node: {...}, Services: { ID: { ID, Service, Tags, Address, Port, ... } } }`
 *   with the Services keys sorted (Consul's JSON encoder sorts map keys), `null` (200) for a node it doesn't know, as
 *   Consul does. Blocking queries: `?index=N&wait=5s` is held until the catalog index moves past N or the wait
 *   expires (plus `holdExtraMs`, standing in for Consul's jitter of up to wait/16); `X-Consul-Index` on every answer;
 *   `?stale` accepted (recorded).
 * - GET /v1/agent/checks -> map CheckID -> { Node, CheckID, Name, Status, Notes, Output, ServiceID, ServiceName,
 *   ServiceTags, Type, ... } of the agent's own node.
 * - GET /v1/health/checks/:service -> array of that service's checks on every node.
 * - GET /v1/health/node/:node -> array of every check of that node (node checks and service checks).
 * - Every check has a Type (`http` unless the test sets another: `ttl`, `tcp`...). Maintenance as Consul registers it:
 *   node maintenance is the node check `_node_maintenance` ("Node Maintenance Mode"), service maintenance the check
 *   `_service_maintenance:<ServiceID>` ("Service Maintenance Mode") of that instance, both Status critical, Type
 *   `maintenance`, Notes = the reason (Consul's default text when none is given).
 * - `filter` (go-bexpr) on the check endpoints, for the expressions vipcast sends: `<Selector> == "<string>"`,
 *   `<value> in ServiceTags` (value quoted or not), joined by `or`; selectors Node, CheckID, Name, Status, Type,
 *   ServiceID, ServiceName. Anything else is 400 "Failed to create boolean expression evaluator", as Consul answers a
 *   filter it can't use.
 * - `ns`, `partition`, `filter`, `stale` are recorded with every request (RequestRecord), as are the query and token.
 * - TLS (constructor option `tls: { key, cert, ca }`): https, client certificates required (requestCert and
 *   rejectUnauthorized, as Consul with `verify_incoming`).
 * - ACL (default deny, as Consul with ACLs on): `setToken(token, policy)` turns ACLs on. An unknown token gets 403
 *   "ACL not found"; a request without a token is the anonymous token (policy `setAnonymousPolicy`, none by default).
 *   What a known token may not read is filtered, not refused, with `X-Consul-Results-Filtered-By-ACLs: true`: the
 *   catalog answers `null` for a node it may not read and leaves out the services it may not read; the check
 *   endpoints leave out the checks it may not read.
 * - Anything else: 404 text, like Consul's mux.
 */
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';

export interface TestService {
  ID?: string;
  Service: string;
  Tags?: string[];
  Address?: string;
  Port?: number;
}

export interface TestCheck {
  Node: string;
  CheckID: string;
  Name: string;
  Status: 'passing' | 'warning' | 'critical' | 'maintenance';
  ServiceID: string;
  ServiceName: string;
  ServiceTags?: string[];
  /** Consul's check type: http (default here), tcp, ttl, script, maintenance... */
  Type?: string;
  Notes?: string;
}

/** The PEM texts of a TLS server: its key and certificate, and the CA client certificates must chain to. */
export interface TestTls {
  key: string | Buffer;
  cert: string | Buffer;
  ca: string | Buffer;
}

export const NODE_MAINTENANCE_DEFAULT = 'Maintenance mode is enabled for this node, but no reason was provided. This is a default message.';
export const SERVICE_MAINTENANCE_DEFAULT = 'Maintenance mode is enabled for this service, but no reason was provided. This is a default message.';

/** An ACL policy's read rules: `node "x"`, `node_prefix "x"`, `service "x"`, `service_prefix "x"` with policy read. */
export interface TestAclPolicy {
  node?: string[];
  nodePrefix?: string[];
  service?: string[];
  servicePrefix?: string[];
}

/** node_prefix "" and service_prefix "" read: everything this server serves. */
export const READ_ALL: TestAclPolicy = { nodePrefix: [''], servicePrefix: [''] };

function allows(names: string[] | undefined, prefixes: string[] | undefined, name: string): boolean {
  return (names ?? []).includes(name) || (prefixes ?? []).some((p) => name.startsWith(p));
}

/** Go's sort.Strings order (bytes; the same as UTF-16 code units for the ASCII names used here). */
function byteOrder(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

export interface RequestRecord {
  method: string;
  path: string;
  query: URLSearchParams;
  token: string | undefined;
  status: number;
  /** How long the answer was held (blocking query). */
  heldMs: number;
  /** The `ns`, `partition` and `filter` parameters (null when absent). */
  ns: string | null;
  partition: string | null;
  filter: string | null;
}

export class ConsulTestServer {
  private server: http.Server;
  private index = 10;
  private readonly nodes = new Map<string, { address: string; services: Map<string, TestService> }>();
  private checks: TestCheck[] = [];
  private aclOn = false;
  private readonly tokens = new Map<string, TestAclPolicy>();
  private anonymous: TestAclPolicy = {};
  private waiters = new Set<() => void>();
  /** Every request, in order. */
  readonly requests: RequestRecord[] = [];
  /** The node the "local agent" runs on (/v1/agent/checks). */
  agentNode: string;
  /** Make the answers fail with this status (5xx tests; a held blocking query too); undefined = normal. */
  failWith: number | undefined;
  /** A blocking query whose wait expired is answered this much later (Consul adds up to wait/16). */
  holdExtraMs = 0;
  /** Record `filter` but answer unfiltered, as a Consul older than 1.4 (which ignores it). */
  ignoreFilter = false;
  /** Send this X-Consul-Index instead of the real index (e.g. '0', a bug older Consul versions had). */
  indexHeader: string | undefined;
  port = 0;

  private readonly tls: TestTls | undefined;

  constructor(agentNode = 'node1', opts: { tls?: TestTls } = {}) {
    this.agentNode = agentNode;
    this.tls = opts.tls;
    this.server = this.make();
  }

  private make(): http.Server {
    const handler = (req: http.IncomingMessage, res: http.ServerResponse): void => void this.handle(req, res);
    if (!this.tls) return http.createServer(handler);
    return https.createServer({ ...this.tls, requestCert: true, rejectUnauthorized: true }, handler);
  }

  get url(): string {
    return `${this.tls ? 'https' : 'http'}://127.0.0.1:${this.port}`;
  }

  /** consul_addr for vipcast (with /v1). */
  get addr(): string {
    return `${this.url}/v1`;
  }

  async start(port = 0): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, '127.0.0.1', () => resolve());
    });
    this.port = (this.server.address() as AddressInfo).port;
  }

  /** Answer on another loopback address too (same port), e.g. 127.0.0.2: reachable, but not "local" by gocast's rule. */
  async listenAlso(host: string): Promise<void> {
    const extra = this.make();
    await new Promise<void>((resolve, reject) => {
      extra.once('error', reject);
      extra.listen(this.port, host, () => resolve());
    });
    this.extras.push(extra);
  }

  private extras: http.Server[] = [];

  /** Stop answering (open connections dropped); start(samePort) brings it back. */
  async stop(): Promise<void> {
    for (const w of [...this.waiters]) w();
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.server = this.make();
  }

  /** Turn ACLs on (default deny) and give `token` this policy (default: read everything). */
  setToken(token: string, policy: TestAclPolicy = READ_ALL): void {
    this.aclOn = true;
    this.tokens.set(token, policy);
  }

  /** The token no longer exists: 403 "ACL not found". */
  removeToken(token: string): void {
    this.tokens.delete(token);
  }

  /** The policy of requests without a token (ACLs on only after setToken). */
  setAnonymousPolicy(policy: TestAclPolicy): void {
    this.anonymous = policy;
  }

  /** Set the index, e.g. lower (a snapshot restore): held blocking queries return at once, as Consul's do. */
  setIndex(index: number): void {
    this.index = index;
    for (const w of [...this.waiters]) w();
  }

  /** Replace the services of `node` (registering the node); bumps the index. */
  setServices(node: string, services: TestService[], address = '198.18.5.1'): void {
    const map = new Map<string, TestService>();
    for (const s of services) map.set(s.ID ?? s.Service, { ...s, ID: s.ID ?? s.Service });
    this.nodes.set(node, { address, services: map });
    this.bump();
  }

  removeNode(node: string): void {
    this.nodes.delete(node);
    this.bump();
  }

  /** Set (add or replace by Node+CheckID) one check's status. */
  setCheck(check: TestCheck): void {
    this.checks = this.checks.filter((c) => !(c.Node === check.Node && c.CheckID === check.CheckID));
    this.checks.push(check);
    this.bump();
  }

  /** Node maintenance on (`reason`; '' = Consul's default text) or off (false), as `consul maint -enable/-disable`. */
  setNodeMaintenance(node: string, reason: string | false): void {
    this.checks = this.checks.filter((c) => !(c.Node === node && c.CheckID === '_node_maintenance'));
    if (reason !== false) {
      this.checks.push({ Node: node, CheckID: '_node_maintenance', Name: 'Node Maintenance Mode', Status: 'critical', ServiceID: '', ServiceName: '', Type: 'maintenance', Notes: reason || NODE_MAINTENANCE_DEFAULT });
    }
    this.bump();
  }

  /** Maintenance of one service instance (by ID) on `node`, as `consul maint -enable -service=ID`; false = off. */
  setServiceMaintenance(node: string, serviceId: string, reason: string | false): void {
    const id = `_service_maintenance:${serviceId}`;
    this.checks = this.checks.filter((c) => !(c.Node === node && c.CheckID === id));
    if (reason !== false) {
      const svc = this.nodes.get(node)?.services.get(serviceId);
      if (!svc) throw new Error(`no service ID ${serviceId} on node ${node}: register it with setServices first`);
      this.checks.push({ Node: node, CheckID: id, Name: 'Service Maintenance Mode', Status: 'critical', ServiceID: serviceId, ServiceName: svc.Service, ServiceTags: svc.Tags ?? [], Type: 'maintenance', Notes: reason || SERVICE_MAINTENANCE_DEFAULT });
    }
    this.bump();
  }

  count(path: string): number {
    return this.requests.filter((r) => r.path.startsWith(path)).length;
  }

  private bump(): void {
    this.index++;
    for (const w of [...this.waiters]) w();
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const started = performance.now();
    const url = new URL(req.url ?? '/', 'http://x');
    const rawToken = req.headers['x-consul-token'];
    const token = Array.isArray(rawToken) ? rawToken[0] : rawToken;
    const q = url.searchParams;
    const record: RequestRecord = { method: req.method ?? '', path: url.pathname, query: q, token, status: 0, heldMs: 0, ns: q.get('ns'), partition: q.get('partition'), filter: q.get('filter') };
    this.requests.push(record);
    let filtered = false;
    /** `raw`: body already JSON text. */
    const send = (status: number, body: unknown, kind: 'json' | 'text' | 'raw' = 'json'): void => {
      record.status = status;
      record.heldMs = performance.now() - started;
      const headers: Record<string, string> = { 'content-type': kind === 'text' ? 'text/plain; charset=utf-8' : 'application/json', 'x-consul-index': this.indexHeader ?? String(this.index), 'x-consul-knownleader': 'true', 'x-consul-lastcontact': '0' };
      if (filtered) headers['x-consul-results-filtered-by-acls'] = 'true';
      res.writeHead(status, headers);
      res.end(kind === 'json' ? JSON.stringify(body) : String(body));
    };
    if (req.method !== 'GET') return send(405, 'method not allowed', 'text');
    let policy: TestAclPolicy = READ_ALL;
    if (this.aclOn) {
      if (token === undefined || token === '') policy = this.anonymous;
      else if (this.tokens.has(token)) policy = this.tokens.get(token)!;
      else return send(403, 'ACL not found', 'text');
    }
    const canNode = (name: string): boolean => allows(policy.node, policy.nodePrefix, name);
    const canService = (name: string): boolean => allows(policy.service, policy.servicePrefix, name);
    if (this.failWith !== undefined) return send(this.failWith, 'rpc error: No cluster leader', 'text');

    let m: RegExpMatchArray | null;
    if ((m = url.pathname.match(/^\/v1\/catalog\/node\/([^/]+)$/))) {
      const want = url.searchParams.get('index');
      if (want !== null) await this.block(Number(want), parseWait(url.searchParams.get('wait')));
      if (this.failWith !== undefined) return send(this.failWith, 'rpc error: No cluster leader', 'text');
      const name = decodeURIComponent(m[1]!);
      const node = this.nodes.get(name);
      if (!node) return send(200, null);
      // Consul's ACL filter: a node the token may not read becomes null; services it may not read are deleted.
      if (!canNode(name)) {
        filtered = true;
        return send(200, null);
      }
      const entries: string[] = [];
      for (const s of [...node.services.values()].sort((a, b) => byteOrder(a.ID!, b.ID!))) {
        if (!canService(s.Service)) {
          filtered = true;
          continue;
        }
        entries.push(`${JSON.stringify(s.ID)}:${JSON.stringify({
          ID: s.ID, Service: s.Service, Tags: s.Tags ?? [], Address: s.Address ?? '', Meta: null, Port: s.Port ?? 0,
          Weights: { Passing: 1, Warning: 1 }, EnableTagOverride: false, Proxy: { Mode: '', MeshGateway: {}, Expose: {} },
          Connect: {}, PeerName: '', CreateIndex: 10, ModifyIndex: 10,
        })}`);
      }
      const nodeJson = JSON.stringify({ ID: '40e4a748-2192-161a-0510-9bf59fe950b5', Node: name, Address: node.address, Datacenter: 'dc1', TaggedAddresses: { lan: node.address, wan: node.address }, Meta: { 'consul-network-segment': '' }, CreateIndex: 5, ModifyIndex: 5 });
      // Built as text: a JS object would put integer-like keys ("10", "9") first, out of Go's order.
      return send(200, `{"Node":${nodeJson},"Services":{${entries.join(',')}}}`, 'raw');
    }
    const filterText = url.searchParams.get('filter');
    let match: (c: TestCheck) => boolean = () => true;
    if (filterText !== null && !this.ignoreFilter) {
      const parsed = parseFilter(filterText);
      if (typeof parsed === 'string') return send(400, `Failed to create boolean expression evaluator: ${parsed}`, 'text');
      match = parsed;
    }
    if (url.pathname === '/v1/agent/checks') {
      const entries: string[] = [];
      for (const c of [...this.checks].sort((a, b) => byteOrder(a.CheckID, b.CheckID))) {
        if (c.Node !== this.agentNode) continue;
        if (!match(c)) continue;
        if (!(c.ServiceID ? canService(c.ServiceName) : canNode(c.Node))) {
          filtered = true;
          continue;
        }
        entries.push(`${JSON.stringify(c.CheckID)}:${JSON.stringify(checkJson(c))}`);
      }
      return send(200, `{${entries.join(',')}}`, 'raw');
    }
    if ((m = url.pathname.match(/^\/v1\/health\/checks\/([^/]+)$/))) {
      const name = decodeURIComponent(m[1]!);
      const all = this.checks.filter((c) => c.ServiceName === name);
      const visible = all.filter((c) => canNode(c.Node) && canService(c.ServiceName));
      filtered = visible.length < all.length;
      return send(200, visible.filter(match).map(checkJson));
    }
    if ((m = url.pathname.match(/^\/v1\/health\/node\/([^/]+)$/))) {
      const name = decodeURIComponent(m[1]!);
      const all = this.checks.filter((c) => c.Node === name);
      const visible = all.filter((c) => canNode(c.Node) && (c.ServiceID === '' || canService(c.ServiceName)));
      filtered = visible.length < all.length;
      return send(200, visible.filter(match).map(checkJson));
    }
    return send(404, `404 page not found`, 'text');
  }

  /** Hold a blocking query until the index moves past `index` or `waitMs` passes (Consul: 0/absent = no wait). */
  private block(index: number, waitMs: number): Promise<void> {
    if (!(index > 0) || index < this.index) return Promise.resolve();
    return new Promise<void>((resolve) => {
      let extra: NodeJS.Timeout | undefined;
      const done = (): void => {
        clearTimeout(timer);
        clearTimeout(extra);
        this.waiters.delete(done);
        resolve();
      };
      // The wait expired: answer after the jitter (a change meanwhile still answers at once).
      const timer = setTimeout(() => {
        if (this.holdExtraMs > 0) extra = setTimeout(done, this.holdExtraMs);
        else done();
      }, waitMs);
      this.waiters.add(done);
    });
  }

  async close(): Promise<void> {
    for (const w of [...this.waiters]) w();
    for (const e of this.extras.splice(0)) {
      e.closeAllConnections();
      await new Promise<void>((resolve) => e.close(() => resolve()));
    }
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

function checkJson(c: TestCheck): Record<string, unknown> {
  return {
    Node: c.Node, CheckID: c.CheckID, Name: c.Name, Status: c.Status, Notes: c.Notes ?? '', Output: c.Type === 'maintenance' ? '' : `${c.Status} output`,
    ServiceID: c.ServiceID, ServiceName: c.ServiceName, ServiceTags: c.ServiceTags ?? [], Type: c.Type ?? 'http',
    Interval: c.Type === 'maintenance' || c.Type === 'ttl' ? '' : '10s', Timeout: c.Type === 'maintenance' || c.Type === 'ttl' ? '' : '5s',
    ExposedPort: 0, Definition: {}, CreateIndex: 20, ModifyIndex: 20,
  };
}

/** Consul wait values: "5s", "100ms", "1m"; default 5 min, at most 10 min. */
function parseWait(text: string | null): number {
  if (!text) return 5 * 60_000;
  const m = text.match(/^(\d+(?:\.\d+)?)(ms|s|m)?$/);
  if (!m) return 5 * 60_000;
  const n = Number(m[1]);
  const ms = m[2] === 'ms' ? n : m[2] === 'm' ? n * 60_000 : n * 1000;
  return Math.min(ms, 10 * 60_000);
}

const FILTER_SELECTORS = new Set(['Node', 'CheckID', 'Name', 'Status', 'Type', 'ServiceID', 'ServiceName']);

/**
 * The part of go-bexpr vipcast uses: terms `<Selector> == "<string>"` and `<value> in ServiceTags` (value quoted or
 * bare) joined by `or`. A matcher, or why the filter is refused.
 */
export function parseFilter(text: string): ((c: TestCheck) => boolean) | string {
  const tokens: Array<{ kind: 'str' | 'word' | 'op'; text: string }> = [];
  const re = /\s*(?:"((?:[^"\\]|\\.)*)"|(==|!=)|([A-Za-z_][A-Za-z0-9_.:=/-]*))/y;
  let pos = 0;
  while (pos < text.length) {
    if (/^\s*$/.test(text.slice(pos))) break;
    re.lastIndex = pos;
    const m = re.exec(text);
    if (!m) return `unsupported filter ${JSON.stringify(text)} at ${pos}`;
    pos = re.lastIndex;
    if (m[1] !== undefined) tokens.push({ kind: 'str', text: m[1].replace(/\\(.)/g, '$1') });
    else if (m[2] !== undefined) tokens.push({ kind: 'op', text: m[2] });
    else tokens.push({ kind: 'word', text: m[3]! });
  }
  const terms: Array<(c: TestCheck) => boolean> = [];
  for (let i = 0; ; ) {
    const [a, b, c] = [tokens[i], tokens[i + 1], tokens[i + 2]];
    if (!a || !b || !c) return `unsupported filter ${JSON.stringify(text)}`;
    if (a.kind === 'word' && FILTER_SELECTORS.has(a.text) && b.kind === 'op' && b.text === '==' && c.kind === 'str') {
      const sel = a.text as keyof TestCheck;
      const want = c.text;
      terms.push((x) => String(x[sel] ?? '') === want);
    } else if (a.kind !== 'op' && b.kind === 'word' && b.text === 'in' && c.kind === 'word' && c.text === 'ServiceTags') {
      const tag = a.text;
      terms.push((x) => (x.ServiceTags ?? []).includes(tag));
    } else {
      return `unsupported filter ${JSON.stringify(text)}`;
    }
    i += 3;
    if (i === tokens.length) break;
    if (tokens[i]!.kind !== 'word' || tokens[i]!.text !== 'or') return `unsupported filter ${JSON.stringify(text)} (only "or" joins terms here)`;
    i++;
  }
  return (x) => terms.some((t) => t(x));
}
