/** The README stays true: every error code and every metric is documented. */
import t from 'tap';
import { readFileSync } from 'node:fs';
import { ERROR_CODES } from '../src/core/errors.js';
import { Metrics } from '../src/core/metrics.js';

const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');

t.test('every error code is documented in the README', async (t) => {
  for (const code of Object.keys(ERROR_CODES)) t.match(readme, `| \`${code}\` |`, code);
});

t.test('every metric vipcast defines is documented in the README', async (t) => {
  const metrics = new Metrics();
  const names = (await metrics.registry.getMetricsAsJSON()).map((m) => m.name).filter((n) => !n.startsWith('vipcast_process_'));
  t.ok(names.length >= 8);
  for (const name of names) t.match(readme, `| \`${name}\` |`, name);
});

t.test('the README quick start names the commands that exist', async (t) => {
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { scripts: Record<string, string> };
  t.match(pkg.scripts.start, /examples\/vipcast\.yaml --dry-run/);
  t.match(readme, /npm ci && npm start/);
  t.match(readme, /\nnpm test\n/);
});
