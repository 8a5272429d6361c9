/**
 * `npm run bench [name...]`: runs the benchmarks, prints one table of their figures at the end, writes
 * bench/results.json (machine, date, every figure with its spread) and bench/reaction-latency.svg (nothing is
 * asserted). Without names: every scenario but soak, fleet and gobgp-reinject, which run by name. Lab benchmarks need
 * root, gobgpd and BIRD; the side-by-side ones (reaction, isolation, scale, shutdown) also Debian's exabgp.
 */
import { fileURLToPath } from 'node:url';
import { benchDryRun } from './dry-run.js';
import { benchLab } from './lab.js';
import { benchGobgp } from './gobgp.js';
import { benchSoak } from './soak.js';
import { benchContainment } from './containment.js';
import { benchFleet } from './fleet.js';
import { benchIsolation, benchReaction, benchScale, benchShutdown } from './exabgp.js';
import { benchStartup } from './startup.js';
import { benchSteadyCost, benchSteadyIsolation, benchSteadyReload } from './steady.js';
import { finish } from './report.js';

const benches: Record<string, () => Promise<void>> = {
  reaction: benchReaction,
  isolation: benchIsolation,
  scale: benchScale,
  shutdown: benchShutdown,
  startup: benchStartup,
  'steady-cost': benchSteadyCost,
  'steady-isolation': benchSteadyIsolation,
  'steady-reload': benchSteadyReload,
  'dry-run': benchDryRun,
  lab: benchLab,
  'gobgp-reinject': benchGobgp,
  containment: benchContainment,
  soak: benchSoak,
  fleet: benchFleet,
};
/** Run only when named: minutes each (soak, fleet), or the router alone (gobgp-reinject). */
const LONG = new Set(['soak', 'fleet', 'gobgp-reinject']);

// Names come first; `--option=value` arguments after them are for the benchmarks (see soak.ts).
const first = process.argv.slice(2).findIndex((a) => a.startsWith('-'));
const wanted = process.argv.slice(2, first === -1 ? undefined : first + 2);
const started = Date.now();
for (const name of wanted.length ? wanted : Object.keys(benches).filter((n) => !LONG.has(n))) {
  const fn = benches[name];
  if (!fn) {
    console.error(`unknown benchmark "${name}" (known: ${Object.keys(benches).join(', ')})`);
    process.exitCode = 2;
    continue;
  }
  try {
    await fn();
  } catch (err) {
    console.error(`benchmark ${name} failed: ${(err as Error).stack ?? String(err)}`);
    process.exitCode = 1;
  }
}
// The results go to the source tree's bench/ (this file runs from dist/bench/).
const benchDir = fileURLToPath(new URL('../../bench/', import.meta.url));
finish(`${benchDir}results.json`, `${benchDir}reaction-latency.svg`);
console.log(`\nbench took ${((Date.now() - started) / 1000).toFixed(0)} s`);
