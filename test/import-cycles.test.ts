/**
 * No import cycle among the source files (issue 11, item 6): api.ts and reload.ts depend on the small interfaces of
 * core/daemon-api.ts, not on the Daemon class. Every static `import ... from` / `export ... from` of a relative module
 * counts, type-only ones too (a type cycle is a design cycle); dynamic import() does not (it is how the CLI keeps the
 * daemon out of `vipcast validate`).
 */
import t from 'tap';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const SRC = fileURLToPath(new URL('../../src/', import.meta.url));

/** file -> the source files it imports. */
function importGraph(root: string): Map<string, Set<string>> {
  const files: string[] = [];
  (function walk(dir: string): void {
    for (const f of readdirSync(dir)) {
      const p = join(dir, f);
      if (statSync(p).isDirectory()) walk(p);
      else if (p.endsWith('.ts')) files.push(p);
    }
  })(root);
  const known = new Set(files);
  const graph = new Map<string, Set<string>>();
  for (const f of files) {
    const deps = new Set<string>();
    // Comments could hold example imports: drop them first.
    const text = readFileSync(f, 'utf8').replace(/\/\*[\s\S]*?\*\//g, '').replace(/^\s*\/\/.*$/gm, '');
    for (const m of text.matchAll(/^\s*(?:import|export)\s[^;]*?from\s+'(\.{1,2}\/[^']+)'/gm)) {
      const target = resolve(dirname(f), m[1]!.replace(/\.js$/, '.ts'));
      if (known.has(target)) deps.add(target);
    }
    graph.set(f, deps);
  }
  return graph;
}

/** The strongly connected components of more than one file (or a file importing itself): each is a cycle. */
function cycles(graph: Map<string, Set<string>>): string[][] {
  let next = 0;
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const found: string[][] = [];
  const visit = (v: string): void => {
    index.set(v, next);
    low.set(v, next);
    next++;
    stack.push(v);
    onStack.add(v);
    for (const w of graph.get(v) ?? []) {
      if (!index.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) low.set(v, Math.min(low.get(v)!, index.get(w)!));
    }
    if (low.get(v) === index.get(v)) {
      const component: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        onStack.delete(w);
        component.push(w);
      } while (w !== v);
      if (component.length > 1 || graph.get(v)!.has(v)) found.push(component.sort());
    }
  };
  for (const v of graph.keys()) if (!index.has(v)) visit(v);
  return found;
}

t.test('the finder finds a cycle (a -> b -> c -> b) and only that one', async (t) => {
  const g = new Map([['a', new Set(['b'])], ['b', new Set(['c'])], ['c', new Set(['b'])], ['d', new Set(['a'])]]);
  t.same(cycles(g), [['b', 'c']]);
});

t.test('no import cycle among src/', async (t) => {
  const graph = importGraph(SRC);
  t.ok(graph.size > 40, `${graph.size} source files read`);
  const rel = (f: string): string => relative(SRC, f);
  t.ok(graph.get(join(SRC, 'core/daemon.ts'))?.has(join(SRC, 'core/api.ts')), 'the graph sees daemon.ts -> api.ts');
  t.same(cycles(graph).map((c) => c.map(rel)), [], 'no cycle');
  for (const f of ['core/api.ts', 'core/reload.ts']) {
    t.notOk(graph.get(join(SRC, f))?.has(join(SRC, 'core/daemon.ts')), `${f} does not import daemon.ts`);
  }
});
