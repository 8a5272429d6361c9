/**
 * Dependency wiring with tsyringe: one child container per config generation. Long-lived parts (check pool, app
 * registry, health tracker) are built once; the router and host network belong to a generation, so a reload builds
 * new ones in a child container before the swap and disposes the old container after it.
 */
import 'reflect-metadata';
import { container as rootContainer, type DependencyContainer } from 'tsyringe';
import type { HostNetwork, Router } from '../plugin-api.js';
import type { VipcastConfig } from './config-types.js';
import type { Logger } from './logger.js';
import { TOKENS } from './tokens.js';
import { createRouter } from '../plugins/routing/index.js';
import { createHostNetwork } from './host/index.js';
import { discoverLocalAddresses } from './host/nat-targets.js';

export interface Generation {
  readonly container: DependencyContainer;
  readonly config: VipcastConfig;
  readonly router: Router;
  readonly host: HostNetwork;
  readonly dryRun: boolean;
}

/** Build a generation's container and resolve its router and host network (not started). */
export async function buildGeneration(config: VipcastConfig, opts: { dryRun: boolean; log: Logger }): Promise<Generation> {
  const c = rootContainer.createChildContainer();
  const dryRun = opts.dryRun || config.routing.plugin === 'dry-run';
  // Plugin constructors may be async (the gobgp router loads its .proto files): build first, register the instance.
  const router = await createRouter(config, dryRun, opts.log);
  const local = dryRun ? undefined : await discoverLocalAddresses(config, opts.log);
  const host = createHostNetwork(config, dryRun, opts.log, local);
  c.register(TOKENS.Router, { useValue: router });
  c.register(TOKENS.HostNetwork, { useValue: host });
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
