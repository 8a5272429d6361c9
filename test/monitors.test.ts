/**
 * Built-in monitors (port, exec, http), each run through a real CheckPool (real piscina worker threads) against real
 * local sockets, servers and processes.
 */
import t from 'tap';
import { pidRunning } from './lab/netns.js';
import { processGroupsWith, processesWith } from './helpers/procs.js';
import { SNAPSHOT_MAX_AGE_MS } from '../src/plugins/monitors/port/check.js';
import { randomUUID } from 'node:crypto';
import { spawn } from 'node:child_process';
import dgram from 'node:dgram';
import { readFileSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { once } from 'node:events';
import { CheckPool } from '../src/core/check-pool.js';
import { MonitorRegistry } from '../src/core/monitor-registry.js';
import type { MonitorSpec } from '../src/plugin-api.js';

const registry = new MonitorRegistry();
const spec = (input: unknown): MonitorSpec => registry.parse(input, { path: 'test', baseDir: process.cwd(), trusted: true });

const pool = new CheckPool({ workers: 2 });
t.teardown(() => pool.close());

/** Port checks read a shared socket-table snapshot at most SNAPSHOT_MAX_AGE_MS old: wait that long after a change. */
const fresh = (): Promise<void> => new Promise((resolve) => setTimeout(resolve, SNAPSHOT_MAX_AGE_MS + 5));

async function tcpServer(host: string, port = 0): Promise<net.Server> {
  const server = net.createServer((s) => s.destroy());
  server.listen({ host, port });
  await once(server, 'listening');
  return server;
}
const portOf = (server: net.Server | dgram.Socket): number =>
  server instanceof net.Server ? (server.address() as net.AddressInfo).port : server.address().port;
const closeServer = (server: net.Server): Promise<void> => new Promise((resolve) => server.close(() => resolve()));

/** A port that was free a moment ago (bound on port 0 then closed). */
async function freePort(host = '127.0.0.1'): Promise<number> {
  const server = await tcpServer(host);
  const port = portOf(server);
  await closeServer(server);
  return port;
}

async function udpSocket(type: 'udp4' | 'udp6', address: string, port = 0): Promise<dgram.Socket> {
  const socket = dgram.createSocket(type);
  await new Promise<void>((resolve, reject) => {
    socket.once('error', reject);
    socket.bind({ address, port }, () => {
      socket.off('error', reject);
      resolve();
    });
  });
  return socket;
}
const closeUdp = (socket: dgram.Socket): Promise<void> => new Promise((resolve) => socket.close(() => resolve()));
/** For t.teardown: close a socket the test may have closed already (a second close() throws). */
const closeUdpIfOpen = (socket: dgram.Socket): void => {
  try {
    socket.close();
  } catch {
    // already closed
  }
};

function hasIpv6Loopback(): boolean {
  try {
    return readFileSync('/proc/net/if_inet6', 'utf8').includes('00000000000000000000000000000001');
  } catch {
    return false;
  }
}

t.test('port:tcp:N is up while a TCP socket listens on 127.0.0.1:N and down once it is closed', async (t) => {
  const server = await tcpServer('127.0.0.1');
  t.teardown(() => (server.listening ? closeServer(server) : undefined));
  const port = portOf(server);
  await fresh();
  const up = await pool.run(spec(`port:tcp:${port}`), 1000);
  t.equal(up.ok, true, up.reason);
  t.equal(up.reason, `tcp port ${port} listening on 127.0.0.1`);
  await closeServer(server);
  await fresh();
  const down = await pool.run(spec(`port:tcp:${port}`), 1000);
  t.equal(down.ok, false);
  t.equal(down.reason, `no socket listens on tcp port ${port}`);
});

t.test('port:tcp:N counts a listener bound only to another local address (127.0.0.2)', async (t) => {
  const server = await tcpServer('127.0.0.2');
  t.teardown(() => closeServer(server));
  const port = portOf(server);
  await fresh();
  const r = await pool.run(spec(`port:tcp:${port}`), 1000);
  t.equal(r.ok, true, r.reason);
  t.match(r.reason, /listening on 127\.0\.0\.2$/);
});

t.test('port:tcp:N counts an IPv6-only listener on ::1', { skip: hasIpv6Loopback() ? false : 'no ::1 on lo' }, async (t) => {
  const server = net.createServer();
  server.listen({ host: '::1', port: 0, ipv6Only: true });
  await once(server, 'listening');
  t.teardown(() => closeServer(server));
  const port = portOf(server);
  await fresh();
  const r = await pool.run(spec(`port:tcp:${port}`), 1000);
  t.equal(r.ok, true, r.reason);
  t.equal(r.reason, `tcp port ${port} listening on ::1`);
});

t.test('port:tcp:N counts a dual-stack wildcard listener (::) and names it', async (t) => {
  const server = await tcpServer('::');
  t.teardown(() => closeServer(server));
  const port = portOf(server);
  await fresh();
  const r = await pool.run(spec(`port:tcp:${port}`), 1000);
  t.equal(r.ok, true, r.reason);
  t.match(r.reason, /listening on (::|0\.0\.0\.0)/);
});

t.test('port:tcp:N ignores a port that only has an established (non-listening) socket on it', async (t) => {
  // The client side of a connection uses an ephemeral local port without listening: that must not count as up.
  // This server keeps its connections open, so the client socket stays ESTABLISHED while the check runs.
  const held: net.Socket[] = [];
  const server = net.createServer((s) => { held.push(s); });
  server.listen({ host: '127.0.0.1', port: 0 });
  await once(server, 'listening');
  t.teardown(() => { for (const s of held) s.destroy(); return closeServer(server); });
  const client = net.connect(portOf(server), '127.0.0.1');
  await once(client, 'connect');
  t.teardown(() => client.destroy());
  const localPort = client.localPort!;
  await fresh();
  const r = await pool.run(spec(`port:tcp:${localPort}`), 1000);
  t.equal(client.readyState, 'open', 'the client connection was still established during the check');
  t.equal(r.ok, false, r.reason);
});

t.test('port:udp:N is up while a UDP socket is bound to N (IPv4 and IPv6) and down once it is closed', async (t) => {
  const v4 = await udpSocket('udp4', '127.0.0.1');
  t.teardown(() => closeUdpIfOpen(v4));
  const port4 = portOf(v4);
  await fresh();
  const up4 = await pool.run(spec(`port:udp:${port4}`), 1000);
  t.equal(up4.ok, true, up4.reason);
  t.equal(up4.reason, `udp port ${port4} bound on 127.0.0.1`);
  await closeUdp(v4);
  await fresh();
  const down4 = await pool.run(spec(`port:udp:${port4}`), 1000);
  t.equal(down4.ok, false);
  t.equal(down4.reason, `no socket is bound to udp port ${port4}`);

  if (hasIpv6Loopback()) {
    const v6 = await udpSocket('udp6', '::1');
    t.teardown(() => closeUdpIfOpen(v6));
    const port6 = portOf(v6);
    await fresh();
    const up6 = await pool.run(spec(`port:udp:${port6}`), 1000);
    t.equal(up6.ok, true, up6.reason);
    t.equal(up6.reason, `udp port ${port6} bound on ::1`);
    await closeUdp(v6);
    await fresh();
    const down6 = await pool.run(spec(`port:udp:${port6}`), 1000);
    t.equal(down6.ok, false, down6.reason);
  }
});

t.test('port:tcp:N never binds the port: a server binding and closing N in a loop never gets EADDRINUSE', async (t) => {
  const port = await freePort();
  const monitor = spec(`port:tcp:${port}`);
  let stop = false;
  let checks = 0;
  let sawUp = 0;
  let sawDown = 0;
  const checker = async (): Promise<void> => {
    while (!stop) {
      const r = await pool.run(monitor, 1000);
      checks++;
      if (r.ok) sawUp++;
      else sawDown++;
    }
  };
  const checkers = [checker(), checker(), checker(), checker()];
  const errors: string[] = [];
  let cycles = 0;
  const until = Date.now() + 20_000;
  for (let i = 0; (i < 400 || checks < 200) && Date.now() < until; i++, cycles++) {
    const server = net.createServer();
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen({ host: '0.0.0.0', port, exclusive: true }, () => resolve());
      });
      // Hold it briefly so that checks also see it listening.
      if (i % 10 === 0) await new Promise((r) => setTimeout(r, 2));
      await closeServer(server);
    } catch (err) {
      errors.push((err as NodeJS.ErrnoException).code ?? String(err));
    }
  }
  stop = true;
  await Promise.all(checkers);
  t.same(errors, [], `the service never failed to bind (${cycles} bind/listen/close cycles, ${checks} checks)`);
  t.ok(checks >= 200, `checks ran concurrently with the binds (${checks})`);
  t.ok(sawUp > 0, `some checks saw the port listening (${sawUp} up, ${sawDown} down)`);
});

t.test('port:udp:N never binds the port: a socket binding and closing N in a loop never gets EADDRINUSE', async (t) => {
  const probe = await udpSocket('udp4', '0.0.0.0');
  const port = portOf(probe);
  await closeUdp(probe);
  const monitor = spec(`port:udp:${port}`);
  let stop = false;
  let checks = 0;
  let sawUp = 0;
  const checker = async (): Promise<void> => {
    while (!stop) {
      const r = await pool.run(monitor, 1000);
      checks++;
      if (r.ok) sawUp++;
    }
  };
  const checkers = [checker(), checker(), checker(), checker()];
  const errors: string[] = [];
  let cycles = 0;
  const until = Date.now() + 20_000;
  for (let i = 0; (i < 400 || checks < 200) && Date.now() < until; i++, cycles++) {
    try {
      const socket = await udpSocket('udp4', '0.0.0.0', port);
      if (i % 10 === 0) await new Promise((r) => setTimeout(r, 2));
      await closeUdp(socket);
    } catch (err) {
      errors.push((err as NodeJS.ErrnoException).code ?? String(err));
    }
  }
  stop = true;
  await Promise.all(checkers);
  t.same(errors, [], `the service never failed to bind (${cycles} cycles, ${checks} checks)`);
  t.ok(checks >= 200, `checks ran concurrently with the binds (${checks})`);
  t.ok(sawUp > 0, `some checks saw the port bound (${sawUp})`);
});

t.test('connect mode is up on a listener and down on a closed port', async (t) => {
  const server = await tcpServer('127.0.0.1');
  t.teardown(() => (server.listening ? closeServer(server) : undefined));
  const port = portOf(server);
  const monitor = spec({ type: 'port', host: '127.0.0.1', port });
  const up = await pool.run(monitor, 1000);
  t.equal(up.ok, true, up.reason);
  t.equal(up.reason, `connected to 127.0.0.1:${port}`);
  await closeServer(server);
  const down = await pool.run(monitor, 1000);
  t.equal(down.ok, false);
  t.equal(down.reason, `connect to 127.0.0.1:${port} failed: ECONNREFUSED`);
});

t.test('connect mode works on ::1', { skip: hasIpv6Loopback() ? false : 'no ::1 on lo' }, async (t) => {
  const server = await tcpServer('::1');
  t.teardown(() => closeServer(server));
  const r = await pool.run(spec({ type: 'port', host: '::1', port: portOf(server) }), 1000);
  t.equal(r.ok, true, r.reason);
  t.equal(r.reason, `connected to [::1]:${portOf(server)}`);
});

t.test('connect mode gives up at the timeout when the handshake never completes (listener with a full backlog)', async (t) => {
  // A listener whose process never accepts (its event loop is blocked) and whose accept queue is full: the kernel
  // drops further SYNs, so a connect hangs; all of it stays on 127.0.0.1.
  const child = spawn(process.execPath, ['-e', `
    const s = require('net').createServer().listen({ port: 0, host: '127.0.0.1', backlog: 1 }, () => {
      console.log(s.address().port);
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0);
    });`], { stdio: ['ignore', 'pipe', 'inherit'] });
  t.teardown(() => child.kill('SIGKILL'));
  const [chunk] = (await once(child.stdout!, 'data')) as [Buffer];
  const port = Number(String(chunk).trim());
  const fillers: net.Socket[] = [];
  t.teardown(() => fillers.forEach((s) => s.destroy()));
  let hanging = false;
  for (let i = 0; i < 16 && !hanging; i++) {
    const s = net.connect(port, '127.0.0.1');
    s.on('error', () => {});
    fillers.push(s);
    hanging = await Promise.race([once(s, 'connect').then(() => false), new Promise<boolean>((r) => setTimeout(r, 300, true))]);
  }
  t.ok(hanging, 'the accept queue is full: a connect hangs');
  const t0 = performance.now();
  const r = await pool.run(spec({ type: 'port', host: '127.0.0.1', port }), 300);
  const elapsed = performance.now() - t0;
  t.equal(r.ok, false);
  t.equal(r.reason, `connect to 127.0.0.1:${port} timed out after 300 ms`);
  t.ok(elapsed >= 280 && elapsed < 1000, `answered at the timeout (${Math.round(elapsed)} ms)`);
});

t.test('exec: exit 0 is up, a non-zero exit is down with the exit code and the output in the reason', async (t) => {
  const pass = await pool.run(spec('exec:true'), 2000);
  t.equal(pass.ok, true, pass.reason);
  t.equal(pass.reason, 'exit 0');
  const fail = await pool.run(spec('exec:echo "db not ready"; echo "to stderr" >&2; exit 3'), 2000);
  t.equal(fail.ok, false);
  t.equal(fail.reason, 'exit 3: db not ready\nto stderr');
});

t.test('exec: keeps only the last 10 lines of the output', async (t) => {
  const r = await pool.run(spec('exec:for i in $(seq 1 500); do echo "line $i"; done; exit 1'), 2000);
  t.equal(r.ok, false);
  const lines = r.reason.replace(/^exit 1: /, '').split('\n');
  t.equal(lines.length, 10);
  t.equal(lines[0], 'line 491');
  t.equal(lines[9], 'line 500');
  t.ok(r.reason.length <= 2048 + 20);
});

/** Processes (not zombies) whose command line contains `marker`. */
const running = pidRunning;

t.test('exec: at the timeout the whole process group is killed and the check is down within ~1 s', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'vipcast-exec-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const marker = `vipcast-test-${randomUUID()}`;
  const pidFile = join(dir, 'pids');
  // bash, a background sleep and a nested bash (whose command line carries the marker) all in the group.
  const command = `echo $$ > ${pidFile}; echo started; sleep 60 & echo $! >> ${pidFile}; bash -c 'sleep 60; echo ${marker}' & echo $! >> ${pidFile}; wait`;
  const t0 = performance.now();
  const r = await pool.run(spec(`exec:${command}`), 300);
  const elapsed = performance.now() - t0;
  t.equal(r.ok, false);
  t.equal(r.reason, 'timed out after 300 ms: started');
  t.ok(elapsed < 1000, `answered within 1 s (${Math.round(elapsed)} ms)`);
  const pids = (await readFile(pidFile, 'utf8')).trim().split('\n').map(Number);
  t.equal(pids.length, 3, 'bash wrote its pid and its two children');
  // SIGKILL is delivered at once, but give the kernel a moment to finish the exits.
  for (let i = 0; i < 50 && (pids.some(running) || processesWith(marker).length > 0); i++) await new Promise((r) => setTimeout(r, 20));
  t.same(pids.filter(running), [], 'no process of the check is left running');
  t.same(processesWith(marker), [], 'no process carrying the marker is left');
});

t.test('exec: background processes left by a finished command are killed with its group', async (t) => {
  const marker = `vipcast-test-${randomUUID()}`;
  const r = await pool.run(spec(`exec:bash -c 'sleep 60; echo ${marker}' >/dev/null 2>&1 & echo done`), 2000);
  t.equal(r.ok, true, r.reason);
  t.equal(r.reason, 'exit 0: done');
  for (let i = 0; i < 50 && processesWith(marker).length > 0; i++) await new Promise((r) => setTimeout(r, 20));
  t.same(processesWith(marker), []);
});

t.test('exec: a background process holding the output pipe does not delay the result', async (t) => {
  const marker = `vipcast-test-${randomUUID()}`;
  // setsid takes the child out of the group, so it survives and keeps stdout open; the check must not wait for it.
  const r = await pool.run(spec(`exec:setsid bash -c 'sleep 5; echo ${marker}' & echo ok`), 2000);
  t.teardown(() => {
    for (const pid of processesWith(marker)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone
      }
    }
  });
  t.equal(r.ok, true, r.reason);
  t.ok(r.durationMs < 1000, `answered after bash exited, not after the holder (${r.durationMs} ms)`);
});

async function httpServer(handler: http.RequestListener): Promise<http.Server> {
  const server = http.createServer(handler);
  server.listen({ host: '127.0.0.1', port: 0 });
  await once(server, 'listening');
  return server;
}
function closeHttp(server: http.Server): Promise<void> {
  server.closeAllConnections();
  return new Promise((resolve) => server.close(() => resolve()));
}

t.test('http: 200 is up, 503 is down, an expected status list is honoured', async (t) => {
  let status = 200;
  const server = await httpServer((_req, res) => {
    res.statusCode = status;
    res.end('body');
  });
  t.teardown(() => closeHttp(server));
  const url = `http://127.0.0.1:${(server.address() as net.AddressInfo).port}/health`;
  const up = await pool.run(spec(`http:${url}`), 1000);
  t.equal(up.ok, true, up.reason);
  t.equal(up.reason, 'HTTP 200');
  status = 503;
  const down = await pool.run(spec(`http:${url}`), 1000);
  t.equal(down.ok, false);
  t.equal(down.reason, 'HTTP 503');
  const expected = await pool.run(spec({ type: 'http', url, expect_status: [503] }), 1000);
  t.equal(expected.ok, true, '503 is up when it is the expected status');
  status = 200;
  const unexpected = await pool.run(spec({ type: 'http', url, expect_status: 204 }), 1000);
  t.equal(unexpected.ok, false, '200 is down when only 204 is expected');
  t.equal(unexpected.reason, 'HTTP 200');
  status = 302;
  const redirect = await pool.run(spec(`http:${url}`), 1000);
  t.equal(redirect.ok, true, 'a redirect is the answer itself (not followed)');
  t.equal(redirect.reason, 'HTTP 302');
});

t.test('http: connection refused is down with the socket error', async (t) => {
  const port = await freePort();
  const r = await pool.run(spec(`http:http://127.0.0.1:${port}/`), 1000);
  t.equal(r.ok, false);
  t.match(r.reason, /ECONNREFUSED/);
});

t.test('http: a server that never answers is down at the timeout', async (t) => {
  const server = await httpServer(() => {
    // never respond
  });
  t.teardown(() => closeHttp(server));
  const url = `http://127.0.0.1:${(server.address() as net.AddressInfo).port}/`;
  const r = await pool.run(spec(`http:${url}`), 300);
  t.equal(r.ok, false);
  t.equal(r.reason, `GET ${url} timed out after 300 ms`);
  t.ok(r.durationMs < 1000, `${r.durationMs} ms`);
});

t.test('a check that blocks its worker synchronously is cut off by the backstop; the pool keeps serving', async (t) => {
  const blocking: MonitorSpec = {
    type: 'blocking',
    text: 'blocking:spin',
    params: { ms: 60_000 },
    workerModule: new URL('../../test/fixtures/monitors/blocking.mjs', import.meta.url).href,
    runsCommands: false,
  };
  const server = await tcpServer('127.0.0.1');
  t.teardown(() => closeServer(server));
  const portCheck = spec(`port:tcp:${portOf(server)}`);
  const t0 = performance.now();
  // A 1 s timeout, not 200 ms: the worker's first import of the fixture counts against the timeout, and on a loaded
  // CI box it took over 200 ms, so the check answered 'timed out' before it began to spin (and spun afterwards).
  const blocked = await pool.run(blocking, 1000);
  const elapsed = performance.now() - t0;
  t.equal(blocked.ok, false);
  t.equal(blocked.reason, 'check blocked its worker; worker restarted');
  t.ok(elapsed >= 2950 && elapsed < 5000, `backstop fired at timeout + 2 s (${Math.round(elapsed)} ms)`);
  t.equal(pool.stats.blockedWorkers, 1);
  for (let i = 0; i < 5; i++) {
    const r = await pool.run(portCheck, 1000);
    t.equal(r.ok, true, `port check ${i} after the restart: ${r.reason}`);
  }
  // The replacement worker comes up; the pool is back at full strength.
  for (let i = 0; i < 100 && pool.stats.workers < 2; i++) await new Promise((r) => setTimeout(r, 20));
  t.equal(pool.stats.workers, 2);
});

t.test('isolation: 50 hung exec checks in flight do not delay a port check', async (t) => {
  const server = await tcpServer('127.0.0.1');
  t.teardown(() => closeServer(server));
  const marker = `vipcast-test-${randomUUID()}`;
  const order: string[] = [];
  // A 12 s timeout: forking fifty shells takes 0.5 s on an idle 2-core box but over 3 s on a loaded CI one, and all
  // fifty must still be in flight (not timed out) when the port check runs.
  const hung = Array.from({ length: 50 }, (_, i) =>
    pool.run(spec(`exec:sleep 60; echo ${marker} ${i}`), 12_000).then((r) => {
      order.push('hung');
      return r;
    }),
  );
  // Let the workers spawn all fifty.
  // Counted by process group: a shell caught between fork and exec of `sleep` shows the marker twice.
  for (let i = 0; i < 500 && processGroupsWith(marker).length < 50; i++) await new Promise((r) => setTimeout(r, 20));
  t.equal(processGroupsWith(marker).length, 50, 'all fifty exec checks are running');
  const t0 = performance.now();
  await fresh();
  const port = await pool.run(spec(`port:tcp:${portOf(server)}`), 1000);
  const latency = performance.now() - t0;
  order.push('port');
  t.equal(port.ok, true, port.reason);
  t.ok(latency < 1000, `port check answered in ${latency.toFixed(1)} ms with 50 hung checks in flight (they time out at 12 s)`);
  const results = await Promise.all(hung);
  t.equal(order[0], 'port', 'the port check answered before any hung check');
  t.ok(results.every((r) => !r.ok && r.reason.startsWith('timed out after 12000 ms')), 'every hung check timed out');
  for (let i = 0; i < 50 && processesWith(marker).length > 0; i++) await new Promise((r) => setTimeout(r, 20));
  t.same(processesWith(marker), [], 'every hung check was killed');
});
