#!/usr/bin/env node
// Entry point: the compiled CLI (npm run build writes dist/).
// First the SIGHUP handler (a reload sent while the rest loads must not end the process), then everything else:
// static imports would all load before this file's first statement runs.
import '../dist/src/early-signals.js';

const { main } = await import('../dist/src/cli.js');
await main(process.argv.slice(2));
