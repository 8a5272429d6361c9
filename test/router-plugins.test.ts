/**
 * Routers as plugins (issue 11, items 1-4 for routers): the built-in gobgp and dry-run are RouterPlugin descriptors
 * in the registry; routing.plugin names any router of the registry (a package's too) and routing.settings is parsed
 * by it with its key path; a generation's router is built by the plugin's factory in a tsyringe child container; a
 * reload compares settings with the plugin's sameSettings.
 */
import t, { type Test } from 'tap';
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadConfig } from '../src/core/config.js';
import { VipcastError } from '../src/core/errors.js';
import { PluginRegistry } from '../src/core/plugin-registry.js';
import { builtinPlugins } from '../src/plugins/builtins.js';
import { parseGobgpSettings } from '../src/plugins/routing/gobgp/plugin.js';
import { buildGeneration, closeGeneration } from '../src/core/container.js';
import { TOKENS } from '../src/core/tokens.js';
import { diffConfig } from '../src/core/reload.js';
import { silentLogger } from '../src/core/logger.js';
import { parsePrefix } from '../src/core/values.js';
import type { Router } from '../src/plugin-api.js';
import { spawnSync } from 'node:child_process';
import { BIN } from './helpers/daemon.js';

const FIXTURES = fileURLToPath(new URL('../../test/fixtures/plugins/', import.meta.url));

function tempDir(t: Test): string {
  const dir = mkdtempSync(join(tmpdir(), 'vipcast-routers-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function install(dir: string, fixture: string, pkgName: string): void {
  const dest = join(dir, 'node_modules', pkgName);
  mkdirSync(dest, { recursive: true });
  cpSync(join(FIXTURES, fixture), dest, { recursive: true });
}

async function problems(file: string): Promise<readonly string[]> {
  try {
    await loadConfig(file, { env: {} });
  } catch (err) {
    if (err instanceof VipcastError) return err.details.length ? err.details : [err.message];
    throw err;
  }
  return [];
}

const BGP = 'bgp: { local_as: 65001, peer_ip: 198.18.0.1, peer_as: 65000 }\n';

t.test('the built-in routers are descriptors in every registry, origin built-in', async (t) => {
  const reg = new PluginRegistry({ builtins: builtinPlugins() });
  t.same(reg.names('router'), ['dry-run', 'gobgp']);
  for (const name of ['dry-run', 'gobgp']) {
    const p = reg.router(name)!;
    t.equal(p.kind, 'router');
    t.equal(reg.origin('router', name), 'built-in');
    t.type(p.create, 'function');
  }
  t.same(reg.router('dry-run')!.parseSettings(undefined, { path: 'routing.settings', baseDir: '/', env: {} }), {});
  t.throws(() => reg.router('dry-run')!.parseSettings({ x: 1 }, { path: 'routing.settings', baseDir: '/', env: {} }), /^routing\.settings\.x: unknown key/);
});

t.test("gobgp's parseSettings is the config's parser for routing.gobgp: the same values, routing.settings is that block, errors keep their key paths", async (t) => {
  const dir = tempDir(t);
  const blocks: Array<[string, Record<string, string>]> = [
    ['{}', {}],
    ['{ address: "198.18.0.9:50051" }', {}],
    ['{ managed: false }', {}],
    ['{ socket_dir: /run/x/, binary: /usr/bin/gobgpd }', {}],
    ['{}', { VIPCAST_GOBGP_ADDRESS: 'unix:///run/g.sock' }],
  ];
  for (const [block, env] of blocks) {
    const file = join(dir, 'v.yaml');
    writeFileSync(file, `${BGP}routing: { plugin: gobgp, gobgp: ${block} }\n`);
    const config = await loadConfig(file, { env });
    const raw = (await import('yaml')).parse(block);
    t.same(parseGobgpSettings(raw, { path: 'routing.gobgp', baseDir: dir, env }), config.routing.gobgp, `${block} ${JSON.stringify(env)}`);
    t.equal(config.routing.settings, config.routing.gobgp, 'gobgp: routing.settings is the routing.gobgp block');
  }
  for (const [raw, env, re] of [
    [{ address: 'nope' }, {}, /^routing\.gobgp\.address: /],
    [{ managed: true, address: '127.0.0.1:1' }, {}, /^routing\.gobgp\.managed: true together with routing\.gobgp\.address/],
    [{ socket_dir: 'rel' }, {}, /^routing\.gobgp\.socket_dir: /],
    [{ binary: 'bin/gobgpd' }, {}, /^routing\.gobgp\.binary: /],
    [{ adress: 'x' }, {}, /^routing\.gobgp\.adress: unknown key/],
  ] as const) t.throws(() => parseGobgpSettings(raw, { path: 'routing.gobgp', baseDir: dir, env }), re);
});

t.test('routing.plugin: a router from a package, its settings parsed at routing.settings', async (t) => {
  const dir = tempDir(t);
  install(dir, 'router-bad-settings', 'vipcast-router-jsonfile');
  const rib = join(dir, 'rib.jsonl');
  const file = join(dir, 'v.yaml');
  writeFileSync(file, `plugins: [vipcast-router-jsonfile]\n${BGP}routing: { plugin: jsonfile, settings: { file: ${rib} } }\n`);
  const config = await loadConfig(file, { env: {} });
  t.equal(config.routing.plugin, 'jsonfile');
  t.same(config.routing.settings, { file: rib });
  t.equal(config.registry.origin('router', 'jsonfile'), 'vipcast-router-jsonfile');

  writeFileSync(file, `plugins: [vipcast-router-jsonfile]\n${BGP}routing: { plugin: jsonfile, settings: { file: rel.jsonl } }\n`);
  t.same(await problems(file), ['routing.settings.file: "rel.jsonl" is not an absolute path']);
  writeFileSync(file, `plugins: [vipcast-router-jsonfile]\n${BGP}routing: { plugin: jsonfile }\n`);
  t.same(await problems(file), ['routing.settings.file: missing (the JSON lines file the RIB is written to)'], 'no settings: the plugin gets {} and names what is missing');
  writeFileSync(file, `plugins: [vipcast-router-jsonfile]\n${BGP}routing: { plugin: jsonfil }\n`);
  t.same(await problems(file), ['routing.plugin: unknown router "jsonfil" (known: dry-run, gobgp, jsonfile; did you mean "jsonfile"?)']);
  writeFileSync(file, `${BGP}routing: { plugin: jsonfile, settings: { file: ${rib} } }\n`);
  t.same(await problems(file), ['routing.plugin: unknown router "jsonfile" (known: dry-run, gobgp)'], 'not in plugins: unknown');
  // --dry-run forces dry-run: the file's router settings are not parsed (they belong to the router the file names).
  writeFileSync(file, `plugins: [vipcast-router-jsonfile]\n${BGP}routing: { plugin: jsonfile, settings: { file: rel } }\n`);
  t.equal((await loadConfig(file, { env: {}, routingPlugin: 'dry-run' })).routing.plugin, 'dry-run');
});

t.test("a generation's router is built by the plugin's factory in a child container", async (t) => {
  const dir = tempDir(t);
  install(dir, 'router-bad-settings', 'vipcast-router-jsonfile');
  install(dir, 'router-factory-throws', 'vipcast-router-factory-throws');
  const rib = join(dir, 'rib.jsonl');
  const file = join(dir, 'v.yaml');
  writeFileSync(file, `plugins: [vipcast-router-jsonfile]\n${BGP}routing: { plugin: jsonfile, settings: { file: ${rib} } }\n`);
  const config = await loadConfig(file, { env: {} });
  const gen = await buildGeneration(config, { log: silentLogger() });
  t.teardown(() => closeGeneration(gen));
  t.equal(gen.router.name, 'jsonfile', 'the package router');
  t.equal(gen.container.resolve<Router>(TOKENS.Router), gen.router, 'registered in the generation container');
  t.equal(gen.container.resolve(TOKENS.HostNetwork), gen.host, 'the host network too, once per container');
  t.not(gen.container.resolve(TOKENS.RouterContext), undefined);
  t.notOk(gen.dryRun);
  await gen.router.announce({ prefix: parsePrefix('198.18.5.1/32', 'x'), app: 'a', communities: [] } as never, 'test');
  t.match(readFileSync(rib, 'utf8'), /"event":"announce","prefix":"198\.18\.5\.1\/32","app":"a"/);

  const dry = await buildGeneration(await loadConfig(file, { env: {}, routingPlugin: 'dry-run' }), { log: silentLogger() });
  t.teardown(() => closeGeneration(dry));
  t.equal(dry.router.name, 'dry-run');
  t.ok(dry.dryRun);
  t.not(dry.container, gen.container, 'one child container per generation');

  writeFileSync(file, `plugins: [vipcast-router-factory-throws]\n${BGP}routing: { plugin: broken }\n`);
  const broken = await loadConfig(file, { env: {} });
  await t.rejects(buildGeneration(broken, { log: silentLogger() }), {
    code: 'VIPCAST_ERR_PLUGIN_LOAD',
    message: 'routing.plugin: router "broken" (plugin "vipcast-router-factory-throws") could not be created: fixture: the broken router cannot reach its backend',
  });
});

t.test('reload diff: a router or settings change needs a new generation; sameSettings decides', async (t) => {
  const dir = tempDir(t);
  install(dir, 'router-bad-settings', 'vipcast-router-jsonfile');
  const file = join(dir, 'v.yaml');
  const load = async (routing: string) => {
    writeFileSync(file, `plugins: [vipcast-router-jsonfile]\n${BGP}routing: ${routing}\n`);
    return loadConfig(file, { env: {} });
  };
  const a = await load(`{ plugin: jsonfile, settings: { file: ${join(dir, 'a')} } }`);
  t.same(diffConfig(a, await load(`{ plugin: jsonfile, settings: { file: ${join(dir, 'a')} } }`)).speaker, [], 'same settings (a fresh load): no new generation');
  t.same(diffConfig(a, await load(`{ plugin: jsonfile, settings: { file: ${join(dir, 'b')} } }`)).speaker, ['routing.settings']);
  t.same(diffConfig(a, await load('{ plugin: dry-run }')).speaker, ['routing.plugin']);
  t.same(diffConfig(await load('{ plugin: gobgp, gobgp: { address: "127.0.0.1:1" } }'), await load('{ plugin: gobgp, gobgp: { address: "127.0.0.1:2" } }')).speaker, ['routing.gobgp.address']);
});

t.test('vipcast validate checks the router settings with their key path', async (t) => {
  const dir = tempDir(t);
  install(dir, 'vipcast-router-jsonl', 'vipcast-router-jsonl');
  const file = join(dir, 'v.yaml');
  const validate = (routing: string) => {
    writeFileSync(file, `plugins: [vipcast-router-jsonl]\n${BGP}routing: ${routing}\n`);
    const r = spawnSync(process.execPath, [BIN, 'validate', '-c', file], { encoding: 'utf8', env: { ...process.env, NODE_OPTIONS: '' } });
    return { code: r.status, out: `${r.stdout}${r.stderr}` };
  };
  const bad = validate('{ plugin: jsonl, settings: { file: rib.jsonl, extra: 1 } }');
  t.equal(bad.code, 2);
  t.match(bad.out, /routing\.settings\.extra: unknown key \(known: file\)/);
  const ok = validate(`{ plugin: jsonl, settings: { file: ${join(dir, 'rib.jsonl')} } }`);
  t.equal(ok.code, 0, ok.out);
  t.match(ok.out, /OK: .*routing jsonl, plugins vipcast-router-jsonl/);
});
