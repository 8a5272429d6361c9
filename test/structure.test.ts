/**
 * Readable structure (issue 11, item 6): no source file is over 400 lines. A file that grows past it is split along
 * its concerns (see the split commits of config.ts, daemon.ts, check-pool.ts), not exempted here.
 */
import t from 'tap';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const MAX_LINES = 400;

/** Every .ts file under `dir`, recursively. */
function sources(dir: string): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...sources(p));
    else if (p.endsWith('.ts')) out.push(p);
  }
  return out;
}

/** Lines as `wc -l` counts them (newlines). */
function lines(file: string): number {
  const text = readFileSync(file, 'utf8');
  let n = 0;
  for (let i = text.indexOf('\n'); i !== -1; i = text.indexOf('\n', i + 1)) n++;
  return n;
}

t.test(`no file under src/ is over ${MAX_LINES} lines`, async (t) => {
  const files = sources(join(ROOT, 'src'));
  t.ok(files.length >= 50, `the source files were found (${files.length})`);
  const over = files
    .map((f) => ({ file: relative(ROOT, f), lines: lines(f) }))
    .filter((f) => f.lines > MAX_LINES)
    .sort((a, b) => b.lines - a.lines);
  t.same(over, [], `files over ${MAX_LINES} lines: ${over.map((f) => `${f.file} (${f.lines})`).join(', ') || 'none'}`);
});
