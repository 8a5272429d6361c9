/**
 * `npm run bench [name...]`: runs the benchmarks and prints figures (nothing is asserted). Names: dry-run, and those
 * that other modules register below. Lab benchmarks need root, gobgpd and BIRD.
 */
import { benchDryRun } from './dry-run.js';
import { benchLab } from './lab.js';
import { benchGobgp } from './gobgp.js';
import { benchSoak } from './soak.js';
import { benchContainment } from './containment.js';
import { benchFleet } from './fleet.js';

const benches: Record<string, () => Promise<void>> = {
  'dry-run': benchDryRun,
  lab: benchLab,
  'gobgp-reinject': benchGobgp,
  soak: benchSoak,
  containment: benchContainment,
  fleet: benchFleet,
};

// Names come first; `--option=value` arguments after them are for the benchmarks (see soak.ts).
const first = process.argv.slice(2).findIndex((a) => a.startsWith('-'));
const wanted = process.argv.slice(2, first === -1 ? undefined : first + 2);
for (const name of wanted.length ? wanted : Object.keys(benches)) {
  const fn = benches[name];
  if (!fn) {
    console.error(`unknown benchmark "${name}" (known: ${Object.keys(benches).join(', ')})`);
    process.exitCode = 2;
    continue;
  }
  await fn();
}
