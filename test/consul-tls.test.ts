/**
 * Consul over TLS: a private CA made with openssl, the Consul test server requiring client certificates
 * (requestCert + rejectUnauthorized, as Consul with verify_incoming). The discovery and the consul monitor (through a
 * real CheckPool) both work with the right CA and client certificate; a missing client certificate, a wrong CA or a
 * wrong server_name each fail with a clear error (the discovery keeps its last apps); bad files are config errors
 * naming the key or the variable (`vipcast validate` too); Consul's variables are honoured; a changed file changes the
 * settings' fingerprint.
 */
import t, { type Test } from 'tap';
import { Writable } from 'node:stream';
import { copyFileSync, readFileSync, writeFileSync } from 'node:fs';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { parseConfigText, consulSettings } from '../src/core/config.js';
import { createLogger } from '../src/core/logger.js';
import { CheckPool } from '../src/core/check-pool.js';
import { VipcastError } from '../src/core/errors.js';
import { ConsulDiscovery } from '../src/plugins/discovery/consul/index.js';
import type { AppSpec, ConsulSettings } from '../src/plugin-api.js';
import { ConsulTestServer } from './helpers/consul-server.js';
import { makeTestPki, SERVER_DNS, type TestPki } from './helpers/test-ca.js';
import { BIN } from './helpers/daemon.js';

const NODE = 'node1';
const pexec = promisify(execFile);

function capture(): { log: ReturnType<typeof createLogger>; text: () => string } {
  let raw = '';
  const destination = new Writable({ write(chunk: Buffer, _enc, cb) { raw += chunk.toString(); cb(); } });
  return { log: createLogger({ destination, pretty: false, level: 'debug' }), text: () => raw };
}

const HEAD = (addr: string, tls: string, extra = ''): string => `
agent:
  listen_addr: ""
  consul_addr: ${addr}
  consul_query_interval: 5s
${tls ? `  consul_tls: ${tls}\n` : ''}${extra}
routing: { plugin: dry-run }
bgp: { local_as: 65001, local_ip: 198.18.0.2, peers: [{ peer_ip: 198.18.0.1, peer_as: 65000 }] }
`;

function config(dir: string, addr: string, tls: string, env: NodeJS.ProcessEnv = {}) {
  return parseConfigText(HEAD(addr, tls), join(dir, 'vipcast.yaml'), { env });
}

function problems(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    if (err instanceof VipcastError) return err.details.join('\n');
    throw err;
  }
  return '';
}

/** A discovery whose app changes are awaited with next(). */
function discovery(consul: ConsulSettings) {
  const cap = capture();
  const changes: Array<readonly AppSpec[]> = [];
  const cfg = parseConfigText(HEAD('""', ''), 'test.yaml', { env: {} });
  const d = new ConsulDiscovery({ agent: cfg.agent, monitors: cfg.monitors, consul, log: cap.log, minBackoffMs: 100 });
  const next = async (ms = 5000): Promise<readonly AppSpec[]> => {
    const deadline = performance.now() + ms;
    const seen = changes.length;
    while (changes.length === seen) {
      if (performance.now() > deadline) throw new Error(`no apps within ${ms} ms; log: ${cap.text().slice(-1500)}`);
      await new Promise((r) => setTimeout(r, 20));
    }
    return changes[changes.length - 1]!;
  };
  const start = () => d.start((apps) => changes.push(apps));
  return { d, start, next, cap, changes };
}

async function waitFor(what: string, fn: () => boolean, ms = 5000): Promise<void> {
  const deadline = performance.now() + ms;
  while (!fn()) {
    if (performance.now() > deadline) throw new Error(`not within ${ms} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const WEB = { ID: 'web', Service: 'web', Tags: ['enable_gocast', 'gocast_vip=198.18.30.1/32'] };
const PASSING = { Node: NODE, CheckID: 'service:web', Name: 'web http', Status: 'passing' as const, ServiceID: 'web', ServiceName: 'web', ServiceTags: WEB.Tags };

let pki: TestPki;

t.before(async () => {
  const dir = t.testdir();
  pki = await makeTestPki(dir);
});

async function tlsServer(t: Test, ca?: Buffer): Promise<ConsulTestServer> {
  const server = new ConsulTestServer(NODE, { tls: { ...pki.serverTls, ...(ca ? { ca } : {}) } });
  await server.start();
  await server.listenAlso('127.0.0.2');
  t.teardown(() => server.close());
  server.setServices(NODE, [WEB]);
  server.setCheck(PASSING);
  return server;
}

t.test('the discovery and the consul monitor (agent and catalog paths) over TLS with the CA and a client certificate', async (t) => {
  const server = await tlsServer(t);
  const tls = `{ ca_file: ca.pem, cert_file: client.pem, key_file: client.key }`;
  const cfg = config(pki.dir, server.addr, tls);
  t.match(cfg.agent.consulTls, { caFile: pki.ca, certFile: pki.clientCert, keyFile: pki.clientKey, serverName: '' }, 'paths taken from the config file\'s folder');
  const consul = consulSettings(cfg.agent, { CONSUL_NODE: NODE });
  const { d, start, next, cap } = discovery(consul);
  t.teardown(() => d.close());
  await start();
  t.same((await next()).map((a) => a.name), ['web'], 'apps read over TLS');
  t.ok(server.requests.filter((r) => r.status !== 0).every((r) => r.status === 200), 'every request answered: authenticated by its client certificate');

  const pool = new CheckPool({ workers: 1 });
  t.teardown(() => pool.close());
  const local = cfg.monitors.parse('consul', { path: 'p', baseDir: pki.dir, trusted: true, app: 'web', consul });
  t.match(local.params, { local: true, tls: { caFile: pki.ca, fingerprint: /^[0-9a-f]{64}$/ } });
  t.notMatch(JSON.stringify(local.params), /BEGIN/, 'params carry paths and a fingerprint, no PEM text');
  let r = await pool.run(local, 3000);
  t.equal(r.ok, true, `agent path over TLS: ${r.reason}`);
  // 127.0.0.2 is not "local": the catalog path; its name is not in the certificate, server_name consul.test is.
  const remoteAddr = `https://127.0.0.2:${server.port}/v1`;
  const named = consulSettings(config(pki.dir, remoteAddr, `{ ca_file: ca.pem, cert_file: client.pem, key_file: client.key, server_name: ${SERVER_DNS} }`).agent, { CONSUL_NODE: NODE });
  const remote = cfg.monitors.parse('consul', { path: 'p', baseDir: pki.dir, trusted: true, app: 'web', consul: named });
  t.match(remote.params, { local: false });
  r = await pool.run(remote, 3000);
  t.equal(r.ok, true, `catalog path over TLS with server_name: ${r.reason}`);
  server.setCheck({ ...PASSING, Status: 'critical' });
  r = await pool.run(remote, 3000);
  t.equal(r.ok, false);
  t.match(r.reason, /"web http" of service "web" is critical/);
  t.notMatch(cap.text(), /BEGIN|PRIVATE/, 'no TLS material in the log');
});

t.test('no client certificate, a wrong CA, a wrong server_name: clear errors; the discovery keeps its last apps', async (t) => {
  const server = await tlsServer(t);
  const pool = new CheckPool({ workers: 1 });
  t.teardown(() => pool.close());
  const cases: Array<[string, string, string, RegExp]> = [
    ['no client certificate', server.addr, '{ ca_file: ca.pem }', /certificate required: the server wants a client certificate/],
    ['a wrong CA', server.addr, '{ ca_file: other-ca.pem, cert_file: client.pem, key_file: client.key }', /UNABLE_TO_VERIFY_LEAF_SIGNATURE|unable to verify|self.signed/i],
    ['a wrong server_name', `https://127.0.0.2:${server.port}/v1`, '{ ca_file: ca.pem, cert_file: client.pem, key_file: client.key, server_name: wrong.test }', /ERR_TLS_CERT_ALTNAME_INVALID.*wrong\.test/],
  ];
  for (const [what, addr, tls, re] of cases) {
    const consul = consulSettings(config(pki.dir, addr, tls).agent, { CONSUL_NODE: NODE });
    const { d, start, cap, changes } = discovery(consul);
    await start();
    await waitFor(`${what}: a logged read error`, () => /Consul catalog read failed/.test(cap.text()));
    await d.close();
    const line = cap.text().split('\n').find((l) => l.includes('Consul catalog read failed'))!;
    t.match(line, re, `${what}: the discovery's error says why`);
    t.match(line, /TLS: check agent\.consul_tls/, `${what}: and where to look`);
    t.equal(changes.length, 0, `${what}: no apps delivered`);
    const spec = config(pki.dir, addr, tls).monitors.parse('consul', { path: 'p', baseDir: pki.dir, trusted: true, app: 'web', consul });
    const r = await pool.run(spec, 3000);
    t.equal(r.ok, false, `${what}: the monitor is down`);
    t.match(r.reason, re, `${what}: monitor reason ${r.reason}`);
  }

  // A running discovery whose client certificate stops being accepted (the server now trusts another CA) keeps its apps.
  const consul = consulSettings(config(pki.dir, server.addr, '{ ca_file: ca.pem, cert_file: client.pem, key_file: client.key }').agent, { CONSUL_NODE: NODE });
  const { d, start, next, cap } = discovery(consul);
  t.teardown(() => d.close());
  await start();
  t.same((await next()).map((a) => a.name), ['web']);
  const port = server.port;
  await server.close();
  const other = new ConsulTestServer(NODE, { tls: { ...pki.serverTls, ca: readFileSync(pki.otherCa) } });
  await other.start(port);
  t.teardown(() => other.close());
  other.setServices(NODE, []);
  // Wake the discovery's held read: the old server is gone, so the next read meets the new one.
  await waitFor('a read refused for the client certificate', () => /Consul catalog read failed.*keeping the last known apps/.test(cap.text()), 15_000);
  t.same(d.apps().map((a) => a.name), ['web'], 'the last apps are kept');
});

t.test('config: unreadable or mismatched files and half a key pair are errors naming the key; vipcast validate reports them', async (t) => {
  const dir = pki.dir;
  t.match(problems(() => config(dir, 'https://127.0.0.1:8501/v1', '{ ca_file: missing.pem }')), new RegExp(`agent\\.consul_tls\\.ca_file: cannot read ${join(dir, 'missing.pem')}: ENOENT`));
  t.match(problems(() => config(dir, 'https://127.0.0.1:8501/v1', '{ cert_file: client.pem }')), /agent\.consul_tls\.key_file: is not set, but agent\.consul_tls\.cert_file is/);
  t.match(problems(() => config(dir, 'https://127.0.0.1:8501/v1', '{ key_file: client.key }')), /agent\.consul_tls\.cert_file: is not set, but agent\.consul_tls\.key_file is/);
  const mismatch = problems(() => config(dir, 'https://127.0.0.1:8501/v1', '{ cert_file: client.pem, key_file: other-client.key }'));
  t.match(mismatch, /agent\.consul_tls\.key_file: .*other-client\.key is not the PEM key of agent\.consul_tls\.cert_file .*client\.pem/);
  writeFileSync(join(dir, 'junk.pem'), 'not a certificate\n');
  t.match(problems(() => config(dir, 'https://127.0.0.1:8501/v1', '{ ca_file: junk.pem }')), /agent\.consul_tls\.ca_file: .*junk\.pem is not a usable PEM CA certificate/);
  t.notMatch(mismatch, /BEGIN|PRIVATE KEY/, 'no key material in the message');
  t.match(problems(() => config(dir, 'https://127.0.0.1:8501/v1', '', { CONSUL_CLIENT_CERT: join(dir, 'client.pem'), CONSUL_CLIENT_KEY: '/nonexistent/k.pem' })),
    /agent\.consul_tls\.key_file \(from \$CONSUL_CLIENT_KEY\): cannot read \/nonexistent\/k\.pem: ENOENT/, 'a variable\'s value is named with the variable');
  t.match(problems(() => config(dir, 'http://127.0.0.1:8500/v1', '', { CONSUL_HTTP_SSL: 'maybe' })), /CONSUL_HTTP_SSL: "maybe" is not true or false/);

  writeFileSync(join(dir, 'bad.yaml'), HEAD('https://127.0.0.1:8501/v1', '{ ca_file: ca.pem, cert_file: client.pem }'));
  const bad = await pexec(process.execPath, [BIN, 'validate', '-c', join(dir, 'bad.yaml')], { env: { ...process.env, NODE_OPTIONS: '' } }).then(() => undefined, (e: { code: number; stdout: string; stderr: string }) => e);
  t.ok(bad && bad.code !== 0, 'vipcast validate fails');
  t.match(`${bad?.stdout ?? ''}${bad?.stderr ?? ''}`, /agent\.consul_tls\.key_file: is not set, but agent\.consul_tls\.cert_file is/, 'naming the key');
});

t.test('Consul\'s variables: CONSUL_CACERT, CONSUL_CLIENT_CERT, CONSUL_CLIENT_KEY, CONSUL_TLS_SERVER_NAME win over the file; CONSUL_HTTP_SSL=true makes http:// https://', async (t) => {
  const server = await tlsServer(t);
  const env = {
    CONSUL_NODE: NODE, CONSUL_HTTP_SSL: 'true', CONSUL_CACERT: pki.ca, CONSUL_CLIENT_CERT: pki.clientCert, CONSUL_CLIENT_KEY: pki.clientKey, CONSUL_TLS_SERVER_NAME: SERVER_DNS,
  };
  // The file names the wrong CA and no server name; the variables win.
  const cfg = parseConfigText(HEAD(`http://127.0.0.2:${server.port}/v1`, '{ ca_file: other-ca.pem }'), join(pki.dir, 'vipcast.yaml'), { env });
  t.equal(cfg.agent.consulAddr, `https://127.0.0.2:${server.port}/v1`, 'CONSUL_HTTP_SSL=true: https');
  t.match(cfg.warnings, [/CONSUL_HTTP_SSL=true: using "https:\/\/127\.0\.0\.2/]);
  t.match(cfg.agent.consulTls, { caFile: pki.ca, certFile: pki.clientCert, keyFile: pki.clientKey, serverName: SERVER_DNS });
  const consul = consulSettings(cfg.agent, env);
  const { d, start, next } = discovery(consul);
  t.teardown(() => d.close());
  await start();
  t.same((await next()).map((a) => a.name), ['web'], 'the discovery reads with the variables\' TLS');
  const pool = new CheckPool({ workers: 1 });
  t.teardown(() => pool.close());
  const r = await pool.run(cfg.monitors.parse('consul', { path: 'p', baseDir: pki.dir, trusted: true, app: 'web', consul }), 3000);
  t.equal(r.ok, true, `the monitor too: ${r.reason}`);
  t.equal(parseConfigText(HEAD('https://127.0.0.1:8501/v1', ''), 'x.yaml', { env: { CONSUL_HTTP_SSL: 'false' } }).agent.consulAddr, 'https://127.0.0.1:8501/v1', 'false never turns https into http');
});

t.test('a changed TLS file changes the fingerprint: the discovery restarts (sameSettings) and the monitor gets new params', async (t) => {
  const dir = t.testdir();
  for (const f of ['ca.pem', 'client.pem', 'client.key']) copyFileSync(join(pki.dir, f), join(dir, f));
  const tls = '{ ca_file: ca.pem, cert_file: client.pem, key_file: client.key }';
  const a = config(dir, 'https://127.0.0.1:8501/v1', tls);
  const same = config(dir, 'https://127.0.0.1:8501/v1', tls);
  const env = { CONSUL_NODE: NODE };
  t.ok(ConsulDiscovery.sameSettings(consulSettings(a.agent, env), consulSettings(same.agent, env)), 'same files: same settings');
  copyFileSync(join(pki.dir, 'other-client.pem'), join(dir, 'client.pem'));
  copyFileSync(join(pki.dir, 'other-client.key'), join(dir, 'client.key'));
  const b = config(dir, 'https://127.0.0.1:8501/v1', tls);
  t.equal(b.agent.consulTls!.certFile, a.agent.consulTls!.certFile, 'same paths');
  t.not(b.agent.consulTls!.fingerprint, a.agent.consulTls!.fingerprint, 'new contents: a new fingerprint');
  t.notOk(ConsulDiscovery.sameSettings(consulSettings(a.agent, env), consulSettings(b.agent, env)), 'the discovery is restarted');
  const parse = (c: typeof a) => c.monitors.parse('consul', { path: 'p', baseDir: dir, trusted: true, app: 'web', consul: consulSettings(c.agent, env) });
  t.notSame(parse(a).params, parse(b).params, 'the monitor\'s params change');
  t.notOk(ConsulDiscovery.sameSettings(consulSettings(a.agent, env), consulSettings(config(dir, 'https://127.0.0.1:8501/v1', '{ ca_file: ca.pem, cert_file: client.pem, key_file: client.key, server_name: x.test }').agent, env)), 'server_name too');
});
