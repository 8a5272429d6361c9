/**
 * A Consul HTTP API test server (node:http on 127.0.0.1) answering the endpoints vipcast uses with Consul's real JSON
 * shapes and behaviour:
 * - GET /v1/catalog/node/:node -> `{ Node: {...}, Services: { ID: { ID, Service, Tags, Address, Port, ... } } }`
 *   with the Services keys sorted (Consul's JSON encoder sorts map keys), `null` (200) for a node it doesn't know, as
 *   Consul does. Blocking queries: `?index=N&wait=5s` is held until the catalog index moves past N or the wait
 *   expires (plus `holdExtraMs`, standing in for Consul's jitter of up to wait/16); `X-Consul-Index` on every answer;
 *   `?stale` accepted (recorded).
 * - GET /v1/agent/checks -> map CheckID -> { Node, CheckID, Name, Status, Notes, Output, ServiceID, ServiceName,
 *   ServiceTags, Type, ... } of the agent's own node; `filter` supports `<tag> in ServiceTags` (quoted or not).
 * - GET /v1/health/checks/:service -> array of that service's checks on every node.
 * - ACL (default deny, as Consul with ACLs on): `setToken(token, policy)` turns ACLs on. An unknown token gets 403
 *   "ACL not found"; a request without a token is the anonymous token (policy `setAnonymousPolicy`, none by default).
 *   What a known token may not read is filtered, not refused, with `X-Consul-Results-Filtered-By-ACLs: true`: the
 *   catalog answers `null` for a node it may not read and leaves out the services it may not read; the check
 *   endpoints leave out the checks it may not read.
 * - Anything else: 404 text, like Consul's mux.
 */
import http from 'node:http';
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
}

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
  /** Send this X-Consul-Index instead of the real index (e.g. '0', a bug older Consul versions had). */
  indexHeader: string | undefined;
  port = 0;

  constructor(agentNode = 'node1') {
    this.agentNode = agentNode;
    this.server = http.createServer((req, res) => void this.handle(req, res));
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
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
    const extra = http.createServer((req, res) => void this.handle(req, res));
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
    this.server = http.createServer((req, res) => void this.handle(req, res));
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
    const record: RequestRecord = { method: req.method ?? '', path: url.pathname, query: url.searchParams, token, status: 0, heldMs: 0 };
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
    if (url.pathname === '/v1/agent/checks') {
      const filter = url.searchParams.get('filter');
      let tag: string | undefined;
      if (filter !== null) {
        const f = filter.trim().match(/^"?([A-Za-z0-9_.=:/-]+)"?\s+in\s+ServiceTags$/);
        if (!f) return send(400, `Failed to create boolean expression evaluator: unsupported filter ${JSON.stringify(filter)}`, 'text');
        tag = f[1];
      }
      const entries: string[] = [];
      for (const c of [...this.checks].sort((a, b) => byteOrder(a.CheckID, b.CheckID))) {
        if (c.Node !== this.agentNode) continue;
        if (tag !== undefined && !(c.ServiceTags ?? []).includes(tag)) continue;
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
      return send(200, visible.map(checkJson));
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
    Node: c.Node, CheckID: c.CheckID, Name: c.Name, Status: c.Status, Notes: '', Output: `${c.Status} output`,
    ServiceID: c.ServiceID, ServiceName: c.ServiceName, ServiceTags: c.ServiceTags ?? [], Type: 'http', Interval: '10s',
    Timeout: '5s', ExposedPort: 0, Definition: {}, CreateIndex: 20, ModifyIndex: 20,
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
