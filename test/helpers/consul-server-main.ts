/**
 * The Consul test server as a process of its own, for lab tests whose vipcast runs inside a network namespace the
 * test process can't listen in. Two forms:
 *
 * - `node consul-server-main.js NODE SERVICES_JSON`: prints `{"addr": ...}` once it listens on 127.0.0.1, serves
 *   NODE's services (a JSON array of TestService), and exits on SIGTERM.
 * - `node consul-server-main.js --control --listen HOST:PORT`: serves many nodes, reachable at HOST:PORT (a TCP relay
 *   in front of the server on 127.0.0.1, so that "stop listening" can be done without touching the server's state:
 *   held blocking queries are cut, new connections refused). Prints `{"addr": ...}` (the relay's), then takes one
 *   command per line on stdin as JSON `{ "id": 1, "cmd": "...", ...args }` and answers each on stdout with
 *   `{ "id": 1, "ok": true, "result": ... }` or `{ "id": 1, "ok": false, "error": "..." }`. Commands:
 *   setServices { node, services, address? }, removeNode { node }, setCheck { check }, setToken { token, policy? },
 *   removeToken { token }, setAnonymousPolicy { policy }, failWith { status: number | null },
 *   stop (the relay stops listening, its connections are dropped), start (it listens again on the same address),
 *   requests { path?, token?, status? } (how many requests, in all or with that path prefix, token, status; and by
 *   status; a held blocking query counts once answered), ping.
 *   Exits on SIGTERM or when stdin closes.
 */
import { createInterface } from 'node:readline';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { ConsulTestServer, type TestAclPolicy, type TestCheck, type TestService } from './consul-server.js';

const argv = process.argv.slice(2);

if (argv[0] !== '--control') {
  const [node = 'node1', services = '[]'] = argv;
  const server = new ConsulTestServer(node);
  await server.start();
  server.setServices(node, JSON.parse(services) as TestService[]);
  process.stdout.write(`${JSON.stringify({ addr: server.addr })}\n`);
  process.on('SIGTERM', () => void server.close().then(() => process.exit(0)));
} else {
  const at = argv.indexOf('--listen');
  const listen = at === -1 ? '127.0.0.1:0' : argv[at + 1] ?? '';
  const colon = listen.lastIndexOf(':');
  const host = listen.slice(0, colon);
  let port = Number(listen.slice(colon + 1));
  if (colon === -1 || !Number.isInteger(port) || port < 0 || port > 65535) {
    process.stderr.write(`--listen: "${listen}" is not HOST:PORT\n`);
    process.exit(2);
  }
  const server = new ConsulTestServer('');
  await server.start();

  // The relay: every connection is piped to the server; stop() closes the listener and drops what it carries.
  const conns = new Set<Socket>();
  let relay: Server | undefined;
  const startRelay = async (): Promise<void> => {
    if (relay) return;
    const r = createServer((c) => {
      const up = connect(server.port, '127.0.0.1');
      conns.add(c);
      conns.add(up);
      const drop = (): void => {
        c.destroy();
        up.destroy();
        conns.delete(c);
        conns.delete(up);
      };
      c.on('error', drop).on('close', drop);
      up.on('error', drop).on('close', drop);
      c.pipe(up);
      up.pipe(c);
    });
    await new Promise<void>((resolve, reject) => {
      r.once('error', reject);
      r.listen(port, host, () => resolve());
    });
    port = (r.address() as { port: number }).port;
    relay = r;
  };
  const stopRelay = async (): Promise<void> => {
    const r = relay;
    relay = undefined;
    for (const c of conns) c.destroy();
    conns.clear();
    if (r) await new Promise<void>((resolve) => r.close(() => resolve()));
  };
  await startRelay();

  type Command = { id?: unknown; cmd?: unknown; [k: string]: unknown };
  const handle = async (c: Command): Promise<unknown> => {
    switch (c.cmd) {
      case 'ping':
        return 'pong';
      case 'setServices':
        server.setServices(String(c.node), c.services as TestService[], typeof c.address === 'string' ? c.address : undefined);
        return null;
      case 'removeNode':
        server.removeNode(String(c.node));
        return null;
      case 'setCheck':
        server.setCheck(c.check as TestCheck);
        return null;
      case 'setToken':
        server.setToken(String(c.token), ...(c.policy ? [c.policy as TestAclPolicy] : []));
        return null;
      case 'removeToken':
        server.removeToken(String(c.token));
        return null;
      case 'setAnonymousPolicy':
        server.setAnonymousPolicy(c.policy as TestAclPolicy);
        return null;
      case 'failWith':
        server.failWith = typeof c.status === 'number' ? c.status : undefined;
        return null;
      case 'stop':
        await stopRelay();
        return null;
      case 'start':
        await startRelay();
        return null;
      case 'requests': {
        const path = typeof c.path === 'string' ? c.path : '';
        const hits = server.requests.filter((r) => r.path.startsWith(path) && (c.token === undefined || r.token === c.token) && (c.status === undefined || r.status === c.status));
        const byStatus: Record<string, number> = {};
        for (const r of hits) byStatus[r.status] = (byStatus[r.status] ?? 0) + 1;
        return { count: hits.length, byStatus };
      }
      default:
        throw new Error(`unknown command ${JSON.stringify(c.cmd)}`);
    }
  };

  process.stdout.write(`${JSON.stringify({ addr: `http://${host === '0.0.0.0' ? '127.0.0.1' : host}:${port}/v1`, port })}\n`);
  const rl = createInterface({ input: process.stdin });
  rl.on('line', (line) => {
    let c: Command;
    try {
      c = JSON.parse(line) as Command;
    } catch {
      process.stdout.write(`${JSON.stringify({ id: null, ok: false, error: 'not JSON' })}\n`);
      return;
    }
    handle(c).then(
      (result) => process.stdout.write(`${JSON.stringify({ id: c.id, ok: true, result })}\n`),
      (err: Error) => process.stdout.write(`${JSON.stringify({ id: c.id, ok: false, error: err.message })}\n`),
    );
  });
  const quit = (): void => void stopRelay().then(() => server.close()).then(() => process.exit(0));
  rl.on('close', quit);
  process.on('SIGTERM', quit);
}
