/**
 * HTTP API (fastify). gocast-compatible paths and parameters: /register, /unregister, /info (any method, as
 * gocast's ServeMux); plus /status, /metrics, /healthz, POST /reload and GET/POST /maintenance. Never returns a
 * password or token.
 *
 * Differences from gocast, on purpose: a refused registration (VIP taken, bad parameter) answers 400/409 with the
 * reason instead of 200 or a dropped connection; exec monitors are refused from HTTP (gocast ran them as root).
 */
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import { chown, chmod, lstat, readFile, unlink } from 'node:fs/promises';
import { createServer } from 'node:http';
import { connect } from 'node:net';
import type { Socket } from 'node:net';
import type { Logger } from './logger.js';
import type { DaemonForApi } from './daemon-api.js';
import type { VipcastConfig } from './config-types.js';
import { VipcastError } from './errors.js';
import { appFromRegistration, type RegistrationInput } from './registration.js';
import { consulSettings } from './config.js';
import { ApiGuard, Accounts, OncePer } from './api-auth.js';
import { unixSocketPath } from './config-schema.js';
import { splitListen } from './listen-addr.js';
import { ALL_APPS } from './maintenance.js';
import { APP_NAME } from './values.js';

export interface ApiServer {
  /** The agent.listen_addr it was started with. */
  readonly listenAddr: string;
  readonly address: string;
  readonly port: number;
  close(): Promise<void>;
}

const ANY = ['GET', 'POST', 'PUT', 'DELETE', 'HEAD'] as const;

/** Request bodies: nothing vipcast takes needs one (parameters are in the query). */
export const API_BODY_LIMIT = 16 * 1024;
/** Longest request target (path and query); a registration with a dozen VIPs and monitors needs under 2 KiB. */
export const API_MAX_URL = 8 * 1024;
/** A request (headers and body) must arrive whole within this time, or it gets 408 and its connection is closed. */
export const API_REQUEST_TIMEOUT_MS = 10_000;

export interface ApiOptions {
  /** Served on a unix socket: its file mode is the access control (api-auth.ts). */
  readonly unix?: boolean;
  readonly guard?: ApiGuard;
}

export function buildApi(daemon: DaemonForApi, log: Logger, opts: ApiOptions = {}): FastifyInstance {
  // fastify's own request logging stays off: handlers log what matters, object first, with the component logger.
  // Our own http.Server: fastify's requestTimeout option is set after the server exists, when node's default
  // headersTimeout (60 s) and its 30 s check interval are already fixed, so a partial request stayed open 30-60 s.
  const app = Fastify({
    logger: false, bodyLimit: API_BODY_LIMIT,
    serverFactory: (handler) => createServer({ requestTimeout: API_REQUEST_TIMEOUT_MS, headersTimeout: API_REQUEST_TIMEOUT_MS, connectionsCheckingInterval: 1000 }, handler),
  });
  const guard = opts.guard ?? new ApiGuard({ accounts: new Accounts() });
  const refusals = new OncePer(60_000);
  // The uid behind a connection does not change while it is open: one lookup per keep-alive connection.
  const peerUids = new WeakMap<Socket, Promise<number | undefined>>();
  /** Who an authorized request came from ("uid 0", "the unix socket"): maintenance records it. */
  const callers = new WeakMap<FastifyRequest, string>();

  app.addHook('onRequest', async (req, reply) => {
    if (req.raw.url !== undefined && req.raw.url.length > API_MAX_URL) {
      return reply.code(414).type('text/plain').send(`request target longer than ${API_MAX_URL} bytes\n`);
    }
  });

  /** Mutating endpoints: only an authorized caller (api-auth.ts); a refusal says why and is logged once a minute per caller. */
  const authorize = async (req: FastifyRequest, reply: FastifyReply): Promise<unknown> => {
    const sock = req.raw.socket;
    const action = req.routeOptions.url ?? req.url.split('?')[0]!;
    const decision = await guard.decide(
      {
        unix: opts.unix === true, authorization: req.headers.authorization, action,
        ...(sock.localAddress ? { localAddress: sock.localAddress, localPort: sock.localPort!, remoteAddress: sock.remoteAddress!, remotePort: sock.remotePort! } : {}),
      },
      daemon.config.agent,
      () => {
        let p = peerUids.get(sock);
        if (!p) peerUids.set(sock, (p = guard.lookup(sock.localAddress ? { localAddress: sock.localAddress, localPort: sock.localPort!, remoteAddress: sock.remoteAddress!, remotePort: sock.remotePort! } : {})));
        return p;
      },
    );
    if (decision.ok) {
      callers.set(req, decision.who);
      return undefined;
    }
    const suppressed = refusals.pass(`${decision.who} ${decision.status} ${action}`);
    // Never the token or the Authorization header: only who, where and why.
    if (suppressed !== undefined) log.warn({ caller: decision.who, path: action, status: decision.status, reason: decision.reason, ...(suppressed ? { suppressed } : {}) }, 'API request refused');
    if (decision.status === 401) reply.header('www-authenticate', decision.invalidToken ? 'Bearer realm="vipcast", error="invalid_token"' : 'Bearer realm="vipcast"');
    if (decision.retryAfter !== undefined) reply.header('retry-after', String(decision.retryAfter));
    return reply.code(decision.status).type('text/plain').send(`${decision.status === 429 ? 'VIPCAST_ERR_API_LIMIT' : 'VIPCAST_ERR_API_AUTH'}: ${decision.reason}\n`);
  };

  app.route({
    method: [...ANY], url: '/register', preHandler: authorize,
    handler: async (req, reply) => {
      const q = req.query as RegistrationInput;
      try {
        const spec = appFromRegistration(q, 'http', daemon.config.agent, daemon.config.monitors, consulSettings(daemon.config.agent, daemon.env));
        daemon.registry.upsert(spec);
        log.info({ app: spec.name, vips: spec.vips.map((v) => v.text) }, 'app registered over HTTP');
        return reply.code(200).send('');
      } catch (err) {
        const conflict = err instanceof VipcastError && err.code === 'VIPCAST_ERR_REGISTRATION' && err.details.length === 0;
        return reply.code(conflict ? 409 : 400).type('text/plain').send(`Invalid request: ${(err as Error).message}\n`);
      }
    },
  });

  app.route({
    method: [...ANY], url: '/unregister', preHandler: authorize,
    handler: async (req, reply) => {
      const name = (req.query as { name?: unknown }).name;
      if (typeof name !== 'string' || name === '') return reply.code(400).type('text/plain').send('Invalid request, need app name specified\n');
      const app = daemon.registry.get(name);
      if (app && app.source !== 'http') {
        return reply.code(409).type('text/plain').send(`Invalid request: app "${name}" comes from ${app.source}, not from an HTTP registration\n`);
      }
      daemon.registry.remove(name);
      return reply.code(200).send('');
    },
  });

  app.route({
    method: [...ANY], url: '/info',
    handler: async (_req, reply) => {
      try {
        return reply.send(await daemon.generation.router.peerStates());
      } catch (err) {
        return reply.code(500).type('text/plain').send(`${(err as Error).message}\n`);
      }
    },
  });

  app.get('/status', async () => daemon.status());
  app.get('/healthz', async () => ({ ok: true }));
  app.get('/metrics', async (_req, reply) => reply.type(daemon.metrics.registry.contentType).send(await daemon.metrics.registry.metrics()));
  app.post('/reload', { preHandler: authorize }, async (_req, reply) => {
    const result = await daemon.requestReload('api');
    return reply.code(result.ok ? 200 : 422).send(result);
  });

  // Maintenance (maintenance.ts). GET lists it (read-only, like /status); POST changes it (authorized like /register).
  const maintenanceList = () => {
    const { host, apps } = daemon.maintenance.list();
    const registered = daemon.registry.all().map((a) => a.name);
    return {
      host: Object.keys(host).length ? host : null,
      apps: Object.fromEntries(Object.entries(apps).map(([name, e]) => [name, { ...e, registered: daemon.registry.get(name) !== undefined }])),
      in_maintenance: registered.filter((n) => daemon.maintenance.entryOf(n)).sort(),
    };
  };
  app.get('/maintenance', async () => maintenanceList());
  app.post('/maintenance', { preHandler: authorize }, async (req, reply) => {
    const q = req.query as Record<string, unknown>;
    const bad = (param: string, message: string) => reply.code(400).send({ error: `${param}: ${message}` });
    const name = q.app;
    if (typeof name !== 'string' || name === '') return bad('app', 'missing: an app name, or "*" for every app (host-wide)');
    if (name !== ALL_APPS && !APP_NAME.test(name)) return bad('app', `"${name.slice(0, 80)}" is not an app name (1-64 of A-Z a-z 0-9 _ . -), nor "*"`);
    const state = q.state;
    if (state !== 'on' && state !== 'off') return bad('state', `${typeof state === 'string' ? `"${state.slice(0, 20)}"` : 'missing'}: must be "on" or "off"`);
    const by = q.by ?? 'api';
    if (by !== 'api' && by !== 'cli') return bad('by', `"${String(by).slice(0, 20)}" is not "api" or "cli"`);
    // An app that is not registered can't be put in maintenance; one whose maintenance outlived it (a reload removed
    // it) can still be taken out.
    if (name !== ALL_APPS && !daemon.registry.get(name) && !(state === 'off' && daemon.maintenance.list().apps[name]?.api)) {
      return reply.code(404).send({ error: `app: no app "${name}" is registered` });
    }
    let saveError: string | undefined;
    await daemon.maintenance.set(name, state === 'on', by, callers.get(req)).catch((err: Error) => (saveError = err.message));
    const now = name === ALL_APPS ? daemon.maintenance.host : daemon.maintenance.view(name);
    const body = {
      app: name, state, maintenance: now ?? null,
      ...(state === 'off' && now ? { note: `still in maintenance: ${now.by === 'file' ? `${now.file} exists` : `${now.host_wide ? 'host-wide ' : ''}maintenance set by ${now.by}`}` } : {}),
      ...(saveError ? { error: `${saveError}: the change is in force but a restart would lose it` } : {}),
    };
    return reply.code(saveError ? 500 : 200).send(body);
  });
  return app;
}

/** Listen on a gocast-style address (":8080", "127.0.0.1:8080", "[::1]:8080") or on a unix socket ("unix:/path"). */
export async function startApi(daemon: DaemonForApi, listenAddr: string, log: Logger): Promise<ApiServer> {
  if (listenAddr.startsWith('unix:')) return startUnixApi(daemon, listenAddr, log);
  const { host, port } = splitListen(listenAddr);
  const app = buildApi(daemon, log);
  await app.listen({ host, port });
  const addr = app.server.address();
  const bound = typeof addr === 'object' && addr ? addr.port : port;
  log.info({ listen: `${host}:${bound}` }, 'HTTP API listening');
  let closed: Promise<void> | undefined;
  return { listenAddr, address: host, port: bound, close: () => (closed ??= app.close()) };
}

/**
 * The API on a unix socket: created with mode 0600 (umask around the bind), then given agent.api_socket_group and
 * agent.api_socket_mode, so no one else can connect in between. A socket file left by a dead vipcast is replaced;
 * one that answers (another vipcast) is not.
 */
async function startUnixApi(daemon: DaemonForApi, listenAddr: string, log: Logger): Promise<ApiServer> {
  const file = unixSocketPath(listenAddr, 'agent.listen_addr');
  const { apiSocketMode, apiSocketGroup } = daemon.config.agent;
  const gid = apiSocketGroup === '' ? -1 : await groupId(apiSocketGroup);
  await removeStaleSocket(file);
  const app = buildApi(daemon, log, { unix: true });
  await app.ready();
  await new Promise<void>((resolve, reject) => {
    const onError = (err: Error): void => reject(err);
    app.server.once('error', onError);
    // bind() happens inside listen(), synchronously: the umask covers this socket only.
    const old = process.umask(0o177);
    try {
      app.server.listen({ path: file }, () => {
        app.server.off('error', onError);
        resolve();
      });
    } finally {
      process.umask(old);
    }
  });
  try {
    if (gid !== -1) await chown(file, -1, gid);
    await chmod(file, apiSocketMode);
  } catch (err) {
    await closeUnixApp(app);
    throw err;
  }
  log.info({ listen: listenAddr, mode: apiSocketMode.toString(8).padStart(4, '0'), ...(apiSocketGroup ? { group: apiSocketGroup } : {}) }, 'HTTP API listening');
  let closed: Promise<void> | undefined;
  return { listenAddr, address: file, port: 0, close: () => (closed ??= closeUnixApp(app)) };
}

/**
 * fastify closes a server of our own making (buildApi's serverFactory) only when its own listen() opened it; the unix
 * socket is opened by startUnixApi. Closing the server also removes the socket file.
 */
async function closeUnixApp(app: FastifyInstance): Promise<void> {
  await app.close();
  if (!app.server.listening) return;
  await new Promise<void>((resolve) => {
    app.server.close(() => resolve());
    app.server.closeIdleConnections();
  });
}

async function removeStaleSocket(file: string): Promise<void> {
  const st = await lstat(file).catch(() => undefined);
  if (!st) return;
  if (!st.isSocket()) throw new VipcastError('VIPCAST_ERR_VALUE', `agent.listen_addr: ${file} exists and is not a socket`);
  const alive = await new Promise<boolean>((resolve) => {
    const c = connect({ path: file });
    c.once('connect', () => {
      c.destroy();
      resolve(true);
    });
    c.once('error', () => resolve(false));
  });
  if (alive) throw new VipcastError('VIPCAST_ERR_VALUE', `agent.listen_addr: ${file} is in use by another process`);
  await unlink(file);
}

async function groupId(group: string): Promise<number> {
  if (/^\d+$/.test(group)) return Number(group);
  const line = (await readFile('/etc/group', 'utf8')).split('\n').find((l) => l.split(':')[0] === group);
  const gid = line?.split(':')[2];
  if (gid === undefined || !/^\d+$/.test(gid)) throw new VipcastError('VIPCAST_ERR_VALUE', `agent.api_socket_group: no group "${group}" in /etc/group`);
  return Number(gid);
}

// In its own light module: the daemon logs it at start without loading fastify first.
export { exposureWarnings } from './exposure.js';
export { splitListen } from './listen-addr.js';
