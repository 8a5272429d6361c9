/**
 * The gobgp router's settings (gocast's routing.gobgp block) have one parser, the gobgp plugin's: the config layer
 * calls it, so the config and the plugin's parseSettings give the same settings and the same errors. Before, the
 * block had two parsers kept in agreement by a test; they disagreed on $VIPCAST_GOBGP_ADDRESS beside a file address
 * (the plugin let the file win; the config and docs/CONFIG.md let the variable win) and the plugin stopped at its
 * first problem.
 */
import t from 'tap';
import { parseConfigText } from '../src/core/config.js';
import { VipcastError } from '../src/core/errors.js';
import gobgp from '../src/plugins/routing/gobgp/plugin.js';

const BGP = 'bgp: { local_as: 65001, peers: [{ peer_ip: 198.18.0.1, peer_as: 65000 }] }\n';
const ctx = (env: Record<string, string> = {}) => ({ path: 'routing.gobgp', baseDir: '/etc/vipcast', env });

/** Every problem of a config that is refused (fails the test when it loads). */
function problems(yaml: string, env: Record<string, string> = {}): readonly string[] {
  try {
    parseConfigText(BGP + yaml, '/etc/vipcast/vipcast.yaml', { env });
  } catch (err) {
    if (err instanceof VipcastError) return err.details;
    throw err;
  }
  throw new Error(`expected the config to be refused:\n${yaml}`);
}

/** The lines of what the plugin's parseSettings throws (fails the test when it returns). */
function thrown(raw: unknown, env: Record<string, string> = {}): string[] {
  try {
    gobgp.parseSettings(raw, ctx(env));
  } catch (err) {
    return (err as Error).message.split('\n');
  }
  throw new Error(`expected ${JSON.stringify(raw)} to be refused`);
}

t.test('$VIPCAST_GOBGP_ADDRESS wins over routing.gobgp.address in the config and in the plugin\'s parseSettings alike (docs/CONFIG.md)', async (t) => {
  const env = { VIPCAST_GOBGP_ADDRESS: 'unix:///run/from-env.sock' };
  const config = parseConfigText(`${BGP}routing: { gobgp: { address: "198.18.0.9:50051" } }\n`, '/etc/vipcast/vipcast.yaml', { env });
  t.equal(config.routing.gobgp.address, 'unix:///run/from-env.sock', 'the config: the variable');
  t.equal(gobgp.parseSettings({ address: '198.18.0.9:50051' }, ctx(env)).address, 'unix:///run/from-env.sock', 'the plugin: the variable too');
  t.same(gobgp.parseSettings({ address: '198.18.0.9:50051' }, ctx(env)), config.routing.gobgp, 'the same settings');
  t.equal(config.routing.settings, config.routing.gobgp, 'routing.settings of gobgp is the routing.gobgp block');
  t.equal(gobgp.parseSettings({ address: '198.18.0.9:50051' }, ctx({ VIPCAST_GOBGP_ADDRESS: '' })).address, '198.18.0.9:50051', 'an empty variable is unset');
});

t.test('the plugin\'s parseSettings reports every problem of the block, each with its key path, as the config does', async (t) => {
  const raw = { address: 'nope', managed: 'yes', binary: 'bin/gobgpd', socket_dir: 'run', adress: 1 };
  const expected = [
    /^routing\.gobgp\.adress: unknown key \(did you mean "address"\?\)/,
    /^routing\.gobgp\.address: "nope" is not host:port/,
    /^routing\.gobgp\.managed: "yes" is not true or false/,
    /^routing\.gobgp\.binary: "bin\/gobgpd" is a relative path/,
    /^routing\.gobgp\.socket_dir: "run" is not an absolute directory path/,
  ];
  t.match(thrown(raw), expected, 'the plugin: all five');
  t.equal(thrown(raw).length, 5);
  const yaml = 'routing: { gobgp: { address: nope, managed: "yes", binary: bin/gobgpd, socket_dir: run, adress: 1 } }\n';
  t.match(problems(yaml), expected, 'the config: the same five, in the same order');
  t.equal(problems(yaml).length, 5);
});

t.test('a bad routing.gobgp value is refused naming its key path (config, plugin, and with dry-run)', async (t) => {
  for (const [yaml, raw, re] of [
    ['{ address: "127.0.0.1" }', { address: '127.0.0.1' }, /^routing\.gobgp\.address: "127\.0\.0\.1" is not host:port/],
    ['{ managed: true, address: "127.0.0.1:1" }', { managed: true, address: '127.0.0.1:1' }, /^routing\.gobgp\.managed: true together with routing\.gobgp\.address: /],
    ['{ socket_dir: /' + 'd'.repeat(100) + ' }', { socket_dir: '/' + 'd'.repeat(100) }, /^routing\.gobgp\.socket_dir: .* is too long for a unix socket path/],
    ['[1]', [1], /^routing\.gobgp: a list is not a mapping/],
  ] as const) {
    t.match(problems(`routing: { gobgp: ${yaml} }`), [re], `config: ${yaml}`);
    t.match(problems(`routing: { plugin: dry-run, gobgp: ${yaml} }`), [re], `config with dry-run: ${yaml}`);
    t.match(thrown(raw), [re], `plugin: ${yaml}`);
  }
  t.match(problems('routing: { gobgp: { managed: true } }', { VIPCAST_GOBGP_ADDRESS: 'unix:///run/x.sock' }), [/^routing\.gobgp\.managed: true together with routing\.gobgp\.address \(from \$VIPCAST_GOBGP_ADDRESS\)/]);
  t.match(thrown({}, { VIPCAST_GOBGP_ADDRESS: 'nope' }), [/^routing\.gobgp\.address \(from \$VIPCAST_GOBGP_ADDRESS\): "nope" is not host:port/]);
});

t.test('routing.gobgp with another router: parsed, never managed; with gobgp, managed-only keys beside an address are warnings', async (t) => {
  const dry = parseConfigText('routing: { plugin: dry-run, gobgp: { managed: true, binary: /opt/gobgpd } }\n', '/etc/vipcast/vipcast.yaml', { env: {} });
  t.same(dry.routing.gobgp, { address: '127.0.0.1:50051', managed: false, binary: '/opt/gobgpd', socketDir: '/run/vipcast/gobgpd' });
  t.same(dry.warnings, [], 'no warning with dry-run');
  const ext = parseConfigText(`${BGP}routing: { gobgp: { managed: false, socket_dir: /run/x } }\n`, '/etc/vipcast/vipcast.yaml', { env: {} });
  t.same(ext.warnings, ['routing.gobgp.socket_dir: ignored: vipcast does not manage gobgpd (routing.gobgp.managed: false)']);
});
