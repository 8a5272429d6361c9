/**
 * Dependency wiring with tsyringe: one child container per config generation. Long-lived parts (check pool, app
 * registry, health tracker, managed speaker) are the Daemon's, built once; the router and host network belong to a
 * generation, so a reload builds new ones in a child container before the swap and closes the old one after it.
 *
 * In a generation's container the router is built by the factory of the router plugin `routing.plugin` names, looked
 * up in the config's PluginRegistry (built-in or from a package): the daemon knows no concrete router class. Plugin
 * factories may be async and tsyringe's resolution is synchronous, so the container holds the factory's *promise*
 * (TOKENS.RouterCreation, created once per container) and buildGeneration awaits it before registering the settled
 * router as TOKENS.Router. The host network is a factory of the config and the local addresses (discovered first,
 * async, for the same reason).
 *
 * Closing is explicit (closeGeneration): router, then host network, the reverse of their start. tsyringe's
 * container.dispose() only disposes instances it constructed from classes, all at once, and neither a router nor a
 * host network is one (they are made by factories and have close(), not dispose()), so it is not relied on for order.
 */
import 'reflect-metadata';
import { container as rootContainer, instanceCachingFactory, type DependencyContainer } from 'tsyringe';
import type { HostNetwork, Router, RouterContext, RouterPlugin } from '../plugin-api.js';
import type { VipcastConfig } from './config-types.js';
import type { Logger } from './logger.js';
import { TOKENS } from './tokens.js';
import { VipcastError } from './errors.js';
import { createHostNetwork } from './host/index.js';
import { discoverLocalAddresses, type LocalAddresses } from './host/nat-targets.js';

export interface Generation {
  readonly container: DependencyContainer;
  readonly config: VipcastConfig;
  readonly router: Router;
  readonly host: HostNetwork;
  /** routing.plugin is dry-run (set by the config or forced by --dry-run): the host network only logs too. */
  readonly dryRun: boolean;
}

const LocalAddressesToken = Symbol('vipcast.LocalAddresses');

/**
 * Build a generation's container and resolve its router and host network (not started). The router plugin is the
 * config's `routing.plugin` (--dry-run forces dry-run when the config is loaded); a factory that throws rejects with
 * an error naming routing.plugin. Nothing is started, so a failed build leaves nothing to close.
 */
export async function buildGeneration(config: VipcastConfig, opts: { log: Logger }): Promise<Generation> {
  const c = rootContainer.createChildContainer();
  const name = config.routing.plugin;
  const dryRun = name === 'dry-run';
  const plugin = config.registry.router(name);
  if (!plugin) throw new VipcastError('VIPCAST_ERR_CONFIG', `routing.plugin: unknown router "${name}" (known: ${config.registry.names('router').join(', ')})`);
  c.register(TOKENS.Config, { useValue: config });
  c.register(TOKENS.Log, { useValue: opts.log });
  c.register(TOKENS.RouterPlugin, { useValue: plugin });
  c.register(TOKENS.RouterContext, {
    useFactory: (d) => ({ log: d.resolve<Logger>(TOKENS.Log).child({ component: 'router', router: name }), settings: config.routing.settings, bgp: config.bgp }) satisfies RouterContext<unknown>,
  });
  c.register(TOKENS.RouterCreation, {
    useFactory: instanceCachingFactory((d) => Promise.resolve().then(() => d.resolve<RouterPlugin>(TOKENS.RouterPlugin).create(d.resolve<RouterContext<unknown>>(TOKENS.RouterContext)))),
  });
  c.register(TOKENS.HostNetwork, {
    useFactory: instanceCachingFactory((d) => createHostNetwork(d.resolve<VipcastConfig>(TOKENS.Config), dryRun, d.resolve<Logger>(TOKENS.Log), d.resolve<{ local?: LocalAddresses }>(LocalAddressesToken).local)),
  });
  let router: Router;
  try {
    router = await c.resolve<Promise<Router>>(TOKENS.RouterCreation);
  } catch (err) {
    const origin = config.registry.origin('router', name);
    throw new VipcastError(err instanceof VipcastError ? err.code : 'VIPCAST_ERR_PLUGIN_LOAD', `routing.plugin: router "${name}"${origin && origin !== 'built-in' ? ` (plugin "${origin}")` : ''} could not be created: ${(err as Error).message}`, { cause: err });
  }
  c.register(TOKENS.Router, { useValue: router });
  // Held in an object: tsyringe takes an undefined useValue for no value at all. dry-run discovers nothing.
  c.register(LocalAddressesToken, { useValue: dryRun ? {} : { local: await discoverLocalAddresses(config, opts.log) } });
  return { container: c, config, router: c.resolve<Router>(TOKENS.Router), host: c.resolve<HostNetwork>(TOKENS.HostNetwork), dryRun };
}

/** Start a generation in the order of invariant 2: host network, speaker, then its peers. */
export async function startGeneration(gen: Generation): Promise<void> {
  await gen.host.start();
  await gen.router.start();
  await gen.router.applyPeers(gen.config.bgp.peers);
}

/**
 * Close a generation in reverse order (router, host network; neither changes what is announced or on the host), then
 * dispose its container. Errors are the caller's to report through `report`; closing goes on regardless.
 */
export async function closeGeneration(gen: Generation, report: (what: string, p: Promise<unknown>) => Promise<void> = (_w, p) => p.then(() => undefined, () => undefined)): Promise<void> {
  await report('router close', gen.router.close());
  await report('host close', gen.host.close());
  await report('container dispose', Promise.resolve(gen.container.dispose()));
}

/** Withdraw everything a speaker holds (a speaker restart or replacement on reload); best effort. */
export async function withdrawAll(router: Router, reason: string): Promise<void> {
  for (const r of await router.listRoutes().catch(() => [])) await router.withdraw(r, reason).catch(() => undefined);
}
