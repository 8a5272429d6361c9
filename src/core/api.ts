/**
 * HTTP API (fastify). gocast-compatible paths and parameters: /register, /unregister, /info (any method, as
 * gocast's ServeMux); plus /status, /metrics, /healthz and POST /reload. Never returns a password or token.
 *
 * Differences from gocast, on purpose: a refused registration (VIP taken, bad parameter) answers 400/409 with the
 * reason instead of 200 or a dropped connection; exec monitors are refused from HTTP (gocast ran them as root).
 */
import Fastify, { type FastifyInstance } from 'fastify';
import type { Logger } from './logger.js';
import type { Daemon } from './daemon.js';
import { VipcastError } from './errors.js';
import { appFromRegistration, type RegistrationInput } from './registration.js';
import { consulSettings } from './config.js';

export interface ApiServer {
  /** The agent.listen_addr it was started with. */
  readonly listenAddr: string;
  readonly address: string;
  readonly port: number;
  close(): Promise<void>;
}

const ANY = ['GET', 'POST', 'PUT', 'DELETE', 'HEAD'] as const;

export function buildApi(daemon: Daemon, log: Logger): FastifyInstance {
  // fastify's own request logging stays off: handlers log what matters, object first, with the component logger.
  const app = Fastify({ logger: false });

  app.route({
    method: [...ANY], url: '/register',
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
    method: [...ANY], url: '/unregister',
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
  app.post('/reload', async (_req, reply) => {
    const result = await daemon.requestReload('api');
    return reply.code(result.ok ? 200 : 422).send(result);
  });
  return app;
}

/** Listen on a gocast-style address (":8080", "127.0.0.1:8080", "[::1]:8080"). */
export async function startApi(daemon: Daemon, listenAddr: string, log: Logger): Promise<ApiServer> {
  const { host, port } = splitListen(listenAddr);
  const app = buildApi(daemon, log);
  await app.listen({ host, port });
  const addr = app.server.address();
  const bound = typeof addr === 'object' && addr ? addr.port : port;
  log.info({ listen: `${host}:${bound}` }, 'HTTP API listening');
  let closed: Promise<void> | undefined;
  return { listenAddr, address: host, port: bound, close: () => (closed ??= app.close()) };
}

export function splitListen(listenAddr: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d{1,5})$/.exec(listenAddr);
  if (!m) throw new VipcastError('VIPCAST_ERR_VALUE', `agent.listen_addr: "${listenAddr}" is not [host]:port`);
  const host = m[1] ?? (m[2] === '' ? '::' : m[2]!);
  return { host, port: Number(m[3]) };
}
