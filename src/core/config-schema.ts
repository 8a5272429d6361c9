/**
 * The config schema and its building blocks: the problem list every check reports into, the value checks of the
 * scalar keys, the convict schema of the scalar sections, the known keys of every section with suggestions for
 * unknown ones, and the convict load of the scalars. `config.ts` builds the typed config from these.
 *
 * The parts live in config/: problems.ts, value-checks.ts, suggest.ts, schema.ts, scalars.ts; this module re-exports
 * them for the rest of vipcast.
 */
export * from './config/problems.js';
export * from './config/value-checks.js';
export * from './config/suggest.js';
export * from './config/schema.js';
export * from './config/scalars.js';
