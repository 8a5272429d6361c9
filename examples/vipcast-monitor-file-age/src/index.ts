/**
 * vipcast-monitor-file-age: the monitor plugin's descriptor (the package's default export). `parse` runs on vipcast's
 * main thread when a spec enters (config file, HTTP registration, Consul tag); the check runs in vipcast's worker
 * threads, from `./check.js`.
 *
 *   file-age:30s:/run/web/heartbeat                               string form: MAX_AGE:PATH
 *   { type: file-age, path: /run/web/heartbeat, max_age: 30s }    structured form
 */
import { resolve } from 'node:path';
import { defineMonitor } from 'vipcast/plugin-api';
import { formatDuration, parseDuration, type FileAgeParams } from './params.js';

export type { FileAgeParams } from './params.js';

export default defineMonitor<FileAgeParams>({
  kind: 'monitor',
  name: 'file-age',
  version: '1.0.0',
  apiVersion: '^1.0.0',
  // Relative to this file (dist/src/index.js): vipcast resolves it when the plugin loads.
  workerModule: './check.js',
  parse(input, ctx) {
    let rawPath: unknown;
    let rawAge: unknown;
    let agePath = ctx.path;
    if (typeof input === 'string') {
      // MAX_AGE first: a path may hold a colon, a duration can't.
      const colon = input.indexOf(':');
      if (colon <= 0) throw new Error(`${ctx.path}: "file-age:${input}" is not MAX_AGE:PATH (e.g. file-age:30s:/run/web/heartbeat)`);
      rawAge = input.slice(0, colon);
      rawPath = input.slice(colon + 1);
    } else {
      // Structured form: vipcast removed `type` (it picked this plugin); anything else unknown is a mistake.
      for (const key of Object.keys(input)) {
        if (key !== 'path' && key !== 'max_age') throw new Error(`${ctx.path}.${key}: unknown key for a file-age monitor (known: path, max_age)`);
      }
      rawPath = input.path;
      rawAge = input.max_age;
      agePath = `${ctx.path}.max_age`;
    }
    if (typeof rawPath !== 'string' || rawPath.trim() === '') throw new Error(`${ctx.path}: a file-age monitor needs a path`);
    // A relative path is relative to the config file's folder, as every path in vipcast's config.
    const path = resolve(ctx.baseDir, rawPath.trim());
    const maxAgeMs = parseDuration(rawAge, agePath);
    // The text after "file-age:": vipcast adds the prefix.
    return { params: { path, maxAgeMs }, text: `${formatDuration(maxAgeMs)}:${path}` };
  },
});
