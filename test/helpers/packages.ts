/** Plugin fixture packages installed the way an operator installs a plugin: packed with `npm pack`, then installed. */
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const pexec = promisify(execFile);

/** test/fixtures/plugins/ in the source tree (fixture packages are not compiled). */
export const PLUGIN_FIXTURES = fileURLToPath(new URL('../../../test/fixtures/plugins/', import.meta.url));

/**
 * `npm pack` the fixture package `fixture` (a folder of test/fixtures/plugins/) into a temp dir and `npm install` the
 * tarball into `dir` (its node_modules; offline: no registry), giving `dir` a package.json first if it has none.
 */
export async function installPackedFixture(dir: string, fixture: string): Promise<void> {
  const packDir = mkdtempSync(join(tmpdir(), 'vipcast-pack-'));
  try {
    await pexec('npm', ['pack', '--silent', '--pack-destination', packDir], { cwd: join(PLUGIN_FIXTURES, fixture) });
    const tgz = readdirSync(packDir).find((f) => f.endsWith('.tgz'));
    if (!tgz) throw new Error(`npm pack left no tarball in ${packDir}`);
    if (!existsSync(join(dir, 'package.json'))) writeFileSync(join(dir, 'package.json'), '{ "name": "vipcast-site", "private": true }\n');
    await pexec('npm', ['install', '--silent', '--no-audit', '--no-fund', '--ignore-scripts', '--offline', join(packDir, tgz)], { cwd: dir });
  } finally {
    rmSync(packDir, { recursive: true, force: true });
  }
}
