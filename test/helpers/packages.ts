/** Plugin fixture packages installed the way an operator installs a plugin: packed with `npm pack`, then installed. */
import { execFile } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { VipcastError } from '../../src/core/errors.js';

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

/** Copy the fixture package `fixture` into `dir`'s node_modules as `pkgName` (no npm: the loader's view only). */
export function installFixtureCopy(dir: string, fixture: string, pkgName: string): string {
  const dest = join(dir, 'node_modules', pkgName);
  mkdirSync(dest, { recursive: true });
  cpSync(join(PLUGIN_FIXTURES, fixture), dest, { recursive: true });
  return dest;
}

/** How `p` settles, as one comparable string: `CODE: message` for a VipcastError, `no error`, or `not coded: ...`. */
export async function settledCode(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'no error';
  } catch (err) {
    return err instanceof VipcastError ? `${err.code}: ${err.message}` : `not coded: ${String(err)}`;
  }
}
