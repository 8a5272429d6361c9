/**
 * API access control without the lab: the kernel socket-table lookup against real sockets (and, as root, a real
 * client of another uid), the rate limiter, token and account checks, the config keys, and the real daemon (dry-run,
 * child process) refusing an unprivileged local user over loopback TCP and over its unix socket.
 */
import t, { type Test } from 'tap';
import { chmodSync, existsSync, linkSync, mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { request as httpRequest } from 'node:http';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { API_BODY_LIMIT, API_REQUEST_TIMEOUT_MS, exposureWarnings } from '../src/core/api.js';
import { Accounts, ApiGuard, RateLimiter, OncePer, bearer, findPeerUid, localPeerUid, procHex, tokenMatches, uidAllowed } from '../src/core/api-auth.js';
import { parseConfigText } from '../src/core/config.js';
import { VipcastError } from '../src/core/errors.js';
import { DaemonProcess, freePort, type LogLine } from './helpers/daemon.js';
import { NOBODY, requestAs, requestsAs } from './helpers/http-as.js';
import { waitFor } from './lab/netns.js';

const isRoot = process.getuid?.() === 0;
const hasSetpriv = existsSync('/usr/bin/setpriv');
const asRootSkip = !isRoot || !hasSetpriv ? 'needs root and setpriv (util-linux) to act as another user' : false;

t.test('procHex prints addresses as /proc/net/tcp{,6} does (host-order 32-bit words)', async (t) => {
  t.equal(procHex([127, 0, 0, 1]), '0100007F');
  t.equal(procHex([...Array(15).fill(0), 1]), '000000000000000000000000' + '01000000');
});

const LINE = (local: string, rem: string, st: string, uid: number, inode: number) =>
  `   7: ${local} ${rem} ${st} 00000000:00000000 00:00000000 00000000 ${String(uid).padStart(5)}        0 ${inode} 1 0000000000000000 20 4 30 10 -1\n`;

t.test('findPeerUid takes only an established client socket with an inode: a closed one (uid 0 in the table) is not root', async (t) => {
  const ends = { clientHex: '0100007F', clientPort: 0xa1b2, serverHex: '0100007F', serverPort: 0x1f90 };
  const head = '  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n';
  const listen = LINE('0100007F:1F90', '00000000:0000', '0A', 0, 100);
  const server = LINE('0100007F:1F90', '0100007F:A1B2', '01', 0, 101);
  t.equal(findPeerUid(head + listen + server + LINE('0100007F:A1B2', '0100007F:1F90', '01', 65534, 102), ends), 65534, 'the client end, not the server end');
  t.equal(findPeerUid(head + listen + server + LINE('0100007F:A1B2', '0100007F:1F90', '06', 0, 0), ends), undefined, 'TIME_WAIT (uid 0, no inode) is no one');
  t.equal(findPeerUid(head + LINE('0100007F:A1B2', '0100007F:1F90', '05', 0, 0), ends), undefined, 'FIN_WAIT2 orphan is no one');
  t.equal(findPeerUid(head + LINE('0100007F:A1B2', '0100007F:1F90', '01', 0, 0), ends), undefined, 'no inode (orphaned) is no one');
  t.equal(findPeerUid(head + LINE('0100007F:A1B3', '0100007F:1F90', '01', 0, 9), ends), undefined, 'another port is another socket');
  t.equal(findPeerUid(head + LINE('0100007F:A1B2', '0100007F:1F91', '01', 0, 9), ends), undefined, 'a connection to another server port is not ours');
});

async function serverOn(t: Test, host: string): Promise<{ server: Server; port: number; accepted: Promise<Socket> }> {
  let accept!: (s: Socket) => void;
  const accepted = new Promise<Socket>((r) => (accept = r));
  const server = createServer((s) => accept(s));
  await new Promise<void>((r) => server.listen(0, host, r));
  t.teardown(() => new Promise<void>((r) => server.close(() => r())));
  return { server, port: (server.address() as { port: number }).port, accepted };
}

const endsOf = (s: Socket) => ({ localAddress: s.localAddress!, localPort: s.localPort!, remoteAddress: s.remoteAddress!, remotePort: s.remotePort! });

for (const [listenHost, connectHost] of [['127.0.0.1', '127.0.0.1'], ['::', '127.0.0.1'], ['::1', '::1'], ['::', '::1']] as const) {
  t.test(`localPeerUid finds the client's uid in the kernel table (listen ${listenHost}, connect ${connectHost})`, async (t) => {
    const { port, accepted } = await serverOn(t, listenHost);
    const client = connect(port, connectHost);
    t.teardown(() => client.destroy());
    const s = await accepted;
    t.equal(await localPeerUid(endsOf(s)), process.getuid!(), 'our own uid');
    client.destroy();
    await waitFor(async () => (await localPeerUid(endsOf(s))) === undefined, 3000, 'closed client no longer counts');
  });
}

t.test('localPeerUid: a client of another uid (nobody) is that uid, not root', { skip: asRootSkip }, async (t) => {
  const { port, accepted } = await serverOn(t, '127.0.0.1');
  const child = spawn('setpriv', ['--reuid', '65534', '--regid', '65534', '--clear-groups', process.execPath, '-e', `const c = require('node:net').connect(${port}, '127.0.0.1'); setTimeout(() => c.destroy(), 20000)`], { stdio: 'ignore' });
  t.teardown(() => child.kill('SIGKILL'));
  const s = await accepted;
  t.equal(await localPeerUid(endsOf(s)), 65534);
  t.equal(await localPeerUid({ ...endsOf(s), remotePort: endsOf(s).remotePort === 1 ? 2 : 1 }), undefined, 'a made-up client port is no one');
});

t.test('rate limiter: burst, then the refill rate, with Retry-After seconds', async (t) => {
  let now = 0;
  const r = new RateLimiter(3, 2, () => now);
  t.same([r.take('a'), r.take('a'), r.take('a')], [0, 0, 0]);
  t.equal(r.take('a'), 1, 'the 4th waits');
  t.equal(r.take('b'), 0, 'another caller has its own bucket');
  now = 500;
  t.equal(r.take('a'), 0, 'one token back after 0.5 s at 2/s');
  t.equal(r.take('a'), 1);
  const once = new OncePer(1000, () => now);
  t.equal(once.pass('x'), 0);
  t.equal(once.pass('x'), undefined);
  t.equal(once.pass('x'), undefined);
  now = 1600;
  t.equal(once.pass('x'), 2, 'the next line says how many were suppressed');
});

t.test('bearer tokens: header parsing and constant-time comparison', async (t) => {
  t.equal(bearer(undefined), '');
  t.equal(bearer('Bearer abc.DEF-123=='), 'abc.DEF-123==');
  t.equal(bearer('bearer x'), 'x', 'the scheme is case-insensitive');
  t.equal(bearer('Basic dXNlcjpwdw=='), undefined);
  t.equal(bearer('Bearer a b'), undefined);
  t.ok(tokenMatches('0123456789abcdef', '0123456789abcdef'));
  t.notOk(tokenMatches('0123456789abcdeF', '0123456789abcdef'));
  t.notOk(tokenMatches('', ''), 'no configured token matches nothing');
});

t.test('a wrong token is 401 even from root only when a token is configured; with none, root is judged by its uid', async (t) => {
  const guard = new ApiGuard();
  const ends = { localAddress: '127.0.0.1', localPort: 8080, remoteAddress: '127.0.0.1', remotePort: 40000 };
  const agent = (apiToken: string) => ({ apiToken, apiAllowedUsers: [], apiAllowedGroups: [], apiInsecureOpen: false });
  const call = (authorization: string | undefined, apiToken: string, uid: number) =>
    guard.decide({ unix: false, authorization, action: '/register', ...ends }, agent(apiToken), () => Promise.resolve(uid));
  t.match(await call('Bearer wrong-token-0123456789abcdef', 'right-token-0123456789abcdef', 0), { ok: false, status: 401, invalidToken: true, reason: '/register: the bearer token is wrong' }, 'configured: root with a wrong token is refused');
  t.match(await call('Bearer wrong-token-0123456789abcdef', '', 0), { ok: true, who: 'uid 0' }, 'none configured: the header is ignored, root is root');
  t.match(await call('Bearer wrong-token-0123456789abcdef', '', 65534), { ok: false, status: 403 }, 'and nobody is nobody');
  t.match(await call('Basic dXNlcjpwdw==', '', 0), { ok: false, status: 401, invalidToken: true }, 'a malformed header is refused either way');
});

t.test('allowed users and groups: names, numbers, primary and supplementary groups', async (t) => {
  const dir = t.testdir({
    passwd: 'root:x:0:0::/root:/bin/sh\ndeploy:x:1001:1001::/home/deploy:/bin/sh\nops:x:1002:2000::/:/bin/sh\nweb:x:1003:1003::/:/bin/sh\n',
    group: 'root:x:0:\ndeploy:x:1001:\nadmins:x:2000:\nvipcast:x:2001:web,deploy\n',
  });
  const acc = new Accounts(join(dir, 'passwd'), join(dir, 'group'));
  const allowed = (uid: number, users: string[], groups: string[]) => uidAllowed(uid, { apiAllowedUsers: users, apiAllowedGroups: groups }, acc);
  t.ok(await allowed(0, [], []), 'root always');
  t.notOk(await allowed(1001, [], []), 'nobody else by default');
  t.ok(await allowed(1001, ['deploy'], []), 'by user name');
  t.ok(await allowed(1001, ['1001'], []), 'by uid');
  t.notOk(await allowed(1002, ['deploy'], []));
  t.ok(await allowed(1002, [], ['admins']), 'by primary group name');
  t.ok(await allowed(1002, [], ['2000']), 'by primary gid');
  t.ok(await allowed(1003, [], ['vipcast']), 'by supplementary group');
  t.notOk(await allowed(1002, [], ['vipcast']));
  t.notOk(await allowed(4242, ['deploy'], ['vipcast']), 'a uid not in /etc/passwd has no name and no groups');
  t.ok(await allowed(4242, ['4242'], []), 'but may be allowed by number');
  writeFileSync(join(dir, 'group'), 'root:x:0:\nadmins:x:2000:\nvipcast:x:2001:web,deploy,ops,xx\n');
  t.ok(await allowed(1002, [], ['vipcast']), 'a changed /etc/group is read again');
});

const cfg = (agent: string, env: NodeJS.ProcessEnv = {}, file = '') => parseConfigText(`agent: { ${agent} }\n`, file, { env, routingPlugin: 'dry-run' });
const problemsOf = (fn: () => unknown): string[] => {
  try {
    fn();
  } catch (err) {
    if (err instanceof VipcastError) return [...err.details];
    throw err;
  }
  return [];
};

t.test('config: the token file must be private and hold a usable token; no message shows it', async (t) => {
  const dir = t.testdir({ 'ok.token': 'a-secret-token-0123456789\n', 'open.token': 'a-secret-token-0123456789\n', 'short.token': 'shortsecret\n' });
  chmodSync(join(dir, 'ok.token'), 0o640);
  chmodSync(join(dir, 'open.token'), 0o644);
  chmodSync(join(dir, 'short.token'), 0o600);
  const file = join(dir, 'vipcast.yaml');
  t.equal(cfg('api_token_file: ok.token', {}, file).agent.apiToken, 'a-secret-token-0123456789', 'relative to the config file; newline dropped');
  const open = problemsOf(() => cfg('api_token_file: open.token', {}, file));
  t.match(open, [/^agent\.api_token_file: .*open\.token is open to every user \(mode 0644\): chmod o-rwx/]);
  const short = problemsOf(() => cfg('api_token_file: short.token', {}, file));
  t.match(short, [/^agent\.api_token_file: the content of .* is not a usable bearer token/]);
  t.match(problemsOf(() => cfg('api_token_file: missing.token', {}, file)), [/^agent\.api_token_file: cannot read .*missing\.token \(ENOENT\)/]);
  t.equal(cfg('api_token_env: VC_TOK', { VC_TOK: 'env-token-0123456789abcdef' }).agent.apiToken, 'env-token-0123456789abcdef');
  t.match(problemsOf(() => cfg('api_token_env: VC_TOK')), ['agent.api_token_env: environment variable VC_TOK is not set']);
  t.match(problemsOf(() => cfg('api_token_env: VC_TOK', { VC_TOK: 'has space in it 0123456' })), [/^agent\.api_token_env: the value of VC_TOK is not a usable bearer token/]);
  t.match(problemsOf(() => cfg('api_token_env: VC_TOK, api_token_file: ok.token', { VC_TOK: 'env-token-0123456789abcdef' }, file)), ['agent.api_token_file: set agent.api_token_file or agent.api_token_env, not both']);
  const all = [open, short, problemsOf(() => cfg('api_token_env: VC_TOK', { VC_TOK: 'has space in it 0123456' }))].flat().join('\n');
  t.notMatch(all, /secret|has space/, 'the token never appears in a message');
});

t.test('config: socket mode, users, groups, unix listen_addr, insecure opt-in', async (t) => {
  t.equal(cfg('api_socket_mode: "0600"').agent.apiSocketMode, 0o600);
  t.match(problemsOf(() => cfg('api_socket_mode: 0660')), ['agent.api_socket_mode: 660 is not a file mode (write it quoted, in octal: "0660")']);
  t.match(problemsOf(() => cfg('api_socket_mode: "0666"')), [/^agent\.api_socket_mode: "0666" lets every local user connect and register/]);
  t.equal(cfg('api_socket_mode: "0666", api_insecure_open: true').agent.apiSocketMode, 0o666, 'allowed with the explicit opt-in');
  t.same(cfg('api_allowed_users: [deploy, 1001], api_allowed_groups: [ops]').agent.apiAllowedUsers, ['deploy', '1001']);
  t.match(problemsOf(() => cfg('api_allowed_users: ["rm -rf", -1]')), [/^agent\.api_allowed_users\[0\]: "rm -rf" is not a user or group name/, /^agent\.api_allowed_users\[1\]: -1 is not/]);
  t.equal(cfg('listen_addr: "unix:/run/vipcast/api.sock"').agent.listenAddr, 'unix:/run/vipcast/api.sock');
  t.match(problemsOf(() => cfg('listen_addr: "unix:api.sock"')), [/^agent\.listen_addr: "unix:api\.sock" is not a unix socket address/]);
  t.match(problemsOf(() => cfg('api_insecure_open: yes')), [/^agent\.api_insecure_open: "yes" is not true or false/]);
});

// ---------------------------------------------------------------------------------------------------------------------
// The daemon (dry-run, a child process) and a local attacker

const TOKEN = 'api-token-0123456789abcdef-ZZ';

async function daemonWith(t: Test, listen: (dir: string) => string, extra = ''): Promise<{ d: DaemonProcess; dir: string }> {
  // Short: a unix socket path holds at most 107 bytes (t.testdir's are longer).
  const dir = mkdtempSync(join(tmpdir(), 'vc-auth-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  chmodSync(dir, 0o755);
  const tokenFile = join(dir, 'api-token');
  writeFileSync(tokenFile, `${TOKEN}\n`, { mode: 0o600 });
  const file = join(dir, 'vipcast.yaml');
  writeFileSync(file, `
agent:
  listen_addr: "${listen(dir)}"
  monitor_interval: 100ms
  api_token_file: api-token
  state_file: ${join(dir, 'state.json')}
  maintenance_state_file: ${join(dir, 'maintenance.json')}
${extra}
routing: { plugin: dry-run }
bgp:
  local_as: 65001
  peers:
    - { peer_ip: 198.18.0.1, peer_as: 65000, md5_password: "md5-pw-secret" }
apps:
  - { name: cfg, vip: 198.18.120.1/32 }
`);
  const d = new DaemonProcess(['run', '-c', file]);
  t.teardown(() => d.stop());
  await d.waitLine((l) => l.msg === 'HTTP API listening', 30_000, 'API up');
  return { d, dir };
}

const announced = (d: DaemonProcess, prefix: string) => d.lines.some((l: LogLine) => l.event === 'route' && l.prefix === prefix);

/** A request from this process (root) with a body: node:http, so the body's size is ours to choose. */
function postBody(port: number, path: string, body: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, path, method: 'POST', headers: { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(body) } }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (text += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

/** A client that sends part of a request and then nothing: when (ms after the start) and with what the server closed it. */
function partialRequest(t: Test, port: number, data: string): Promise<{ afterMs: number; got: string }> {
  const started = Date.now();
  const s = connect(port, '127.0.0.1', () => s.write(data));
  t.teardown(() => s.destroy());
  let got = '';
  s.setEncoding('utf8');
  s.on('data', (d: string) => (got += d));
  s.on('error', () => undefined);
  return new Promise((resolve) => s.once('close', () => resolve({ afterMs: Date.now() - started, got })));
}

t.test('daemon on 127.0.0.1: nobody is refused with 403 on every mutating endpoint, root and the token get in, read-only stays open, limits apply', { skip: asRootSkip }, async (t) => {
  const port = await freePort();
  const { d } = await daemonWith(t, () => `127.0.0.1:${port}`);
  const base = `http://127.0.0.1:${port}`;
  await d.waitLine((l) => l.event === 'route' && l.prefix === '198.18.120.1/32', 5000, 'config app up');
  // Slow clients (slowloris): started first, they run while the rest of the test does.
  const partialHeaders = partialRequest(t, port, 'POST /register?name=slow HTTP/1.1\r\nHost: 127.0.0.1\r\n');
  const partialBody = partialRequest(t, port, 'POST /register?name=slow HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/plain\r\nContent-Length: 100\r\n\r\nabc');

  let r = await requestAs(`${base}/register?name=evil&vip=198.18.120.66/32&nat=tcp:80:8080`);
  t.equal(r.status, 403, 'nobody may not register');
  t.equal(r.body, 'VIPCAST_ERR_API_AUTH: uid 65534 may not call /register: only root, the user vipcast runs as, agent.api_allowed_users, members of agent.api_allowed_groups, or a caller with the bearer token may\n');
  r = await requestAs(`${base}/unregister?name=cfg`);
  t.equal(r.status, 403, 'nor unregister');
  r = await requestAs(`${base}/reload`, { method: 'POST' });
  t.equal(r.status, 403, 'nor reload');
  t.match(r.body, /uid 65534 may not call \/reload/);
  const maintenanceBefore = await requestAs(`${base}/maintenance`);
  t.equal(maintenanceBefore.status, 200, 'GET /maintenance stays open to nobody');
  r = await requestAs(`${base}/maintenance?app=cfg&state=on`, { method: 'POST' });
  t.equal(r.status, 403, 'nor put an app in maintenance');
  t.match(r.body, /^VIPCAST_ERR_API_AUTH: uid 65534 may not call \/maintenance/);
  r = await requestAs(`${base}/maintenance?app=*&state=on`, { method: 'POST' });
  t.equal(r.status, 403, 'nor the whole host');
  t.equal((await requestAs(`${base}/maintenance`)).body, maintenanceBefore.body, 'maintenance is as it was');
  t.same(JSON.parse(maintenanceBefore.body), { host: null, apps: {}, in_maintenance: [] });
  r = await requestAs(`${base}/register?name=evil&vip=198.18.120.66/32`, { token: 'wrong-token-0123456789abcdef' });
  t.equal(r.status, 401, 'a wrong token is refused');
  t.match(r.headers['www-authenticate'], /^Bearer realm="vipcast", error="invalid_token"/);
  t.match(r.body, /the bearer token is wrong/);
  for (const path of ['/status', '/metrics', '/healthz', '/info']) t.equal((await requestAs(`${base}${path}`)).status, 200, `${path} stays open to nobody`);
  const status = (await requestAs(`${base}/status`)).body;
  t.notMatch(status, TOKEN, '/status never shows the token');
  t.notMatch(status, 'md5-pw-secret');

  await new Promise((res) => setTimeout(res, 500));
  t.notOk(announced(d, '198.18.120.66/32'), 'nothing nobody sent was announced');
  t.notOk(d.lines.some((l) => l.event === 'route' && l.action === 'withdraw'), 'nothing was withdrawn (no unregister, no maintenance)');

  r = await requestAs(`${base}/register?name=tok&vip=198.18.120.67/32`, { token: TOKEN });
  t.equal(r.status, 200, 'nobody with the token may register');
  await d.waitLine((l) => l.event === 'route' && l.action === 'announce' && l.prefix === '198.18.120.67/32', 3000, 'token registration announced');
  r = await requestAs(`${base}/register?name=root&vip=198.18.120.68/32`, { user: 'root' });
  t.equal(r.status, 200, 'root without a token may (gocast scripts)');
  await d.waitLine((l) => l.event === 'route' && l.action === 'announce' && l.prefix === '198.18.120.68/32', 3000, 'root registration announced');

  const refusals = d.lines.filter((l) => l.msg === 'API request refused');
  t.ok(refusals.some((l) => l.caller === 'uid 65534' && l.path === '/register' && l.status === 403), 'the refusal is logged with uid and path');
  t.notMatch(JSON.stringify(d.lines) + d.stderr.join(''), TOKEN, 'the token is never logged');
  t.notMatch(JSON.stringify(d.lines), 'wrong-token', 'nor a wrong one');

  // Many refused requests: one log line a minute per caller and path, then 429 past the burst.
  const before = d.lines.filter((l) => l.msg === 'API request refused').length;
  // 300 in a row get past the burst of 100 unless they take over 10 s (20 a second refill). 120 got no 429 once on the
  // loaded 2-core box (load average ~20): they took over 1 s.
  const many = await requestsAs(`${base}/unregister?name=cfg`, { count: 300 });
  const codes = many.map((m) => m.status);
  t.equal(codes.filter((c) => c === 403).length + codes.filter((c) => c === 429).length, 300);
  t.ok(codes.includes(429), 'past the burst: 429');
  const limited = many.find((m) => m.status === 429)!;
  t.match(limited.headers['retry-after'], /^\d+$/);
  t.match(limited.body, /^VIPCAST_ERR_API_LIMIT: too many requests from uid 65534/);
  await new Promise((res) => setTimeout(res, 200));
  t.ok(d.lines.filter((l) => l.msg === 'API request refused').length - before <= 2, 'a flood is not a log line per request');
  t.equal((await requestAs(`${base}/register?name=root2&vip=198.18.120.69/32`, { user: 'root' })).status, 200, "nobody's flood does not use up root's allowance");

  // Size limits.
  r = await requestAs(`${base}/register?name=x&vip=${'1'.repeat(9000)}`, { user: 'root' });
  t.equal(r.status, 414, 'a request target over 8 KiB');
  const over = await postBody(port, '/register', 'x'.repeat(17 * 1024));
  t.equal(over.status, 413, 'a 17 KiB body, even from root');
  const under = await postBody(port, '/register', 'x'.repeat(API_BODY_LIMIT - 1024));
  t.same([under.status, under.body], [400, 'Invalid request: name: missing (the app name); vip: missing (a prefix such as 198.18.0.10/32)\n'], 'a body under the limit reaches the handler');

  // The request timeout: a request that never arrives whole gets 408 and its connection is closed.
  const bound = API_REQUEST_TIMEOUT_MS + 15_000;
  for (const [what, p] of [['headers', partialHeaders], ['body', partialBody]] as const) {
    const { afterMs, got } = await p;
    t.ok(afterMs < bound, `a request cut off in its ${what} is closed (after ${afterMs} ms; bound ${bound} ms)`);
    t.match(got, /^HTTP\/1\.1 408 /, `408 (${what})`);
  }
});

/** The kind of each start-up warning: the config key it names first. */
const kinds = (w: string[]) => w.map((line) => line.split(/[: ]/)[0]);

t.test('exposureWarnings: one line per exposure at start, none for a closed config, dry-run warns only about the API', async (t) => {
  const env = { VC_TOK: 'env-token-0123456789abcdef' };
  const BGP = 'bgp: { local_as: 65001, peers: [{ peer_ip: 198.18.0.1, peer_as: 65000 }] }';
  const ALLOW = 'allowed_prefixes: [198.18.0.0/15]';
  const config = (agent: string, routing = 'routing: { plugin: gobgp }', dryRun = false) =>
    parseConfigText(`agent: { ${agent} }
${routing}
${BGP}
`, '/etc/vipcast/vipcast.yaml', { env, ...(dryRun ? { routingPlugin: 'dry-run' as const } : {}) });
  const rows: Array<{ name: string; agent: string; routing?: string; dryRun?: boolean; want: string[] }> = [
    { name: 'loopback API, managed gobgpd (unix socket), an allowlist: nothing to say', agent: ALLOW, want: [] },
    { name: 'gobgpd on TCP', agent: ALLOW, routing: 'routing: { plugin: gobgp, gobgp: { address: "127.0.0.1:50051" } }', want: ['routing.gobgp.address'] },
    { name: 'gobgpd on a unix socket of your own', agent: ALLOW, routing: 'routing: { plugin: gobgp, gobgp: { address: "unix:///run/gobgpd/api.sock" } }', want: [] },
    { name: 'every address, no token', agent: `${ALLOW}, listen_addr: ":8080"`, want: ['agent.listen_addr'] },
    { name: 'every address (0.0.0.0), no token', agent: `${ALLOW}, listen_addr: "0.0.0.0:8080"`, want: ['agent.listen_addr'] },
    { name: 'every address with a token', agent: `${ALLOW}, listen_addr: ":8080", api_token_env: VC_TOK`, want: [] },
    { name: '[::1] is loopback', agent: `${ALLOW}, listen_addr: "[::1]:8080"`, want: [] },
    { name: 'a unix socket API', agent: `${ALLOW}, listen_addr: "unix:/run/vipcast/api.sock"`, want: [] },
    { name: 'api_insecure_open (one line, not two)', agent: `${ALLOW}, listen_addr: ":8080", api_insecure_open: true`, want: ['agent.api_insecure_open'] },
    { name: 'no allowlist', agent: '', want: ['agent.allowed_prefixes'] },
    { name: 'everything open', agent: 'listen_addr: ":8080"', routing: 'routing: { plugin: gobgp, gobgp: { address: "127.0.0.1:50051" } }', want: ['agent.listen_addr', 'agent.allowed_prefixes', 'routing.gobgp.address'] },
    { name: 'dry-run: no allowlist and gobgpd on TCP announce nothing; the API is still open', agent: 'listen_addr: ":8080"', routing: 'routing: { plugin: gobgp, gobgp: { address: "127.0.0.1:50051" } }', dryRun: true, want: ['agent.listen_addr'] },
    { name: 'routing.plugin dry-run', agent: '', routing: 'routing: { plugin: dry-run }', want: [] },
  ];
  for (const row of rows) {
    const c = config(row.agent, row.routing, row.dryRun);
    t.same(kinds(exposureWarnings(c, row.dryRun === true || c.routing.plugin === 'dry-run')), row.want, row.name);
  }
  const all = exposureWarnings(config('listen_addr: ":8080"', 'routing: { plugin: gobgp, gobgp: { address: "127.0.0.1:50051" } }'));
  t.same(all, [
    'agent.listen_addr: ":8080" is reachable from other hosts and no token is configured: /register, /unregister, POST /reload and POST /maintenance answer 401 to them (only root and agent.api_allowed_users on this host may call them); set agent.api_token_file to let other hosts in',
    'agent.allowed_prefixes is unset: any prefix of /24 (IPv4) or /48 (IPv6) or longer outside the ranges that are never announced may be announced, from this file and from every authorized /register, Consul service and plugin; list the ranges this host may announce',
    'routing.gobgp.address: "127.0.0.1:50051" is TCP: every local user can use gobgpd\'s API there (read the peers\' MD5 passwords, announce any route); use a unix socket only root can open (see packaging/)',
  ]);
  t.match(exposureWarnings(config('listen_addr: ":8080", api_insecure_open: true')), [/^agent\.api_insecure_open: anyone who can reach :8080 may register VIPs/]);
  t.match(exposureWarnings(config('min_prefix_length_v4: 28')), [/^agent\.allowed_prefixes is unset: any prefix of \/28 \(IPv4\) or \/48/], 'the minimum in force');
  t.notMatch(JSON.stringify(exposureWarnings(config('listen_addr: ":8080", api_token_env: VC_TOK'))), env.VC_TOK, 'never the token');
});

t.test('daemon on a unix socket: created 0660 with no window, nobody cannot connect, root registers through it', { skip: asRootSkip }, async (t) => {
  const { d, dir } = await daemonWith(t, (dir) => `unix:${join(dir, 'api.sock')}`);
  const sock = join(dir, 'api.sock');
  t.equal(statSync(sock).mode & 0o777, 0o660, 'agent.api_socket_mode default');
  let r = await requestAs(`unix:${sock}|/register?name=evil&vip=198.18.120.70/32`);
  t.same([r.status, r.body], [0, 'EACCES'], 'nobody cannot open the socket');
  r = await requestAs(`unix:${sock}|/register?name=viasock&vip=198.18.120.71/32`, { user: 'root' });
  t.equal(r.status, 200, 'root registers over the socket, no token');
  await d.waitLine((l) => l.event === 'route' && l.action === 'announce' && l.prefix === '198.18.120.71/32', 3000, 'announced');
  r = await requestAs(`unix:${sock}|/register?name=grp&vip=198.18.120.72/32`, { user: { uid: 65534, gid: 0 } });
  t.equal(r.status, 200, 'a member of the socket\'s group (root) may: the file mode is the access control');
  d.kill('SIGTERM');
  await d.exited;
  t.notOk(existsSync(sock), 'the socket file is removed at exit');
});

t.test('a stale socket file is replaced; a live one (another vipcast) is not taken over', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'vc-auth-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const sock = join(dir, 'api.sock');
  // Closed in the test, and in teardown too: a failed wait before the inline close must not leave a listener behind
  // (the file would then hang until tap's timeout).
  const closeServer = (s: Server) => new Promise<void>((r) => (s.listening ? s.close(() => r()) : r()));
  const other = createServer(() => undefined);
  t.teardown(() => closeServer(other));
  await new Promise<void>((r) => other.listen(sock, r));
  const { d: first } = await (async () => {
    const file = join(dir, 'v.yaml');
    writeFileSync(file, `agent: { listen_addr: "unix:${sock}", state_file: ${join(dir, 's.json')} }\nrouting: { plugin: dry-run }\n`);
    const d = new DaemonProcess(['run', '-c', file]);
    t.teardown(() => d.stop());
    return { d };
  })();
  const line = await first.waitLine((l) => l.msg === 'HTTP API could not start; running without it', 10_000, 'refused to take a live socket');
  t.match(JSON.stringify(line), /is in use by another process/);
  await closeServer(other);
  mkdirSync(join(dir, 'x'));
  // A socket file with no listener behind it (a crashed vipcast): the next start replaces it.
  const stale = createServer();
  t.teardown(() => closeServer(stale));
  await new Promise<void>((r) => stale.listen(join(dir, 'x', 'api.sock'), r));
  // A second name for the socket file stays behind when the listener closes (and unlinks the first name).
  linkSync(join(dir, 'x', 'api.sock'), join(dir, 'stale.sock'));
  await closeServer(stale);
  const file2 = join(dir, 'v2.yaml');
  writeFileSync(file2, `agent: { listen_addr: "unix:${join(dir, 'stale.sock')}", state_file: ${join(dir, 's2.json')} }\nrouting: { plugin: dry-run }\n`);
  const d2 = new DaemonProcess(['run', '-c', file2]);
  t.teardown(() => d2.stop());
  await d2.waitLine((l) => l.msg === 'HTTP API listening', 10_000, 'took over the stale socket file');
  t.equal((await requestAs(`unix:${join(dir, 'stale.sock')}|/healthz`, { user: 'root' })).status, 200);
});
