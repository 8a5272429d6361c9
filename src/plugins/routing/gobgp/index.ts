/**
 * The `gobgp` router plugin: vipcast's routes and peers in a local gobgpd (GoBGP v3 gRPC API). Everything specific
 * to GoBGP v3 stays in this folder; a v4 adapter (package `api`, typed NLRI) would sit beside it.
 */
export { GobgpRouter, type GobgpRouterOptions } from './router.js';
export { localIpFor, resolveDefaultGateway, type IpRunner } from './net.js';
export { ManagedGobgpd, managedSocket, type ManagedGobgpdOptions } from './managed.js';
/** The `gobgp` router plugin descriptor (cheap to import from ./plugin.js alone; this barrel loads the router too). */
export { default, parseGobgpSettings, type GobgpSettings } from './plugin.js';
