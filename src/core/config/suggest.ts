/** Suggestions for unknown names: the known names closest to a misspelt one. */

/** Optimal string alignment distance (Levenshtein plus adjacent transpositions). */
export function distance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) => [i, ...new Array<number>(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) d[0]![j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let v = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) v = Math.min(v, d[i - 2]![j - 2]! + 1);
      d[i]![j] = v;
    }
  }
  return d[a.length]![b.length]!;
}

export const squash = (s: string): string => s.toLowerCase().replace(/[-_\s]/g, '');

/** Known names close to `word`, best first (at most 3). */
export function suggest(word: string, known: readonly string[]): string[] {
  const w = word.toLowerCase();
  const scored: Array<[string, number]> = [];
  for (const k of known) {
    if (squash(k) === squash(word)) scored.push([k, 0]);
    else {
      const dist = distance(w, k);
      const limit = Math.max(1, Math.min(3, Math.floor(w.length / 3)));
      if (dist <= limit) scored.push([k, dist]);
      else if (w.length >= 4 && (k.includes(w) || w.includes(k))) scored.push([k, 4]);
    }
  }
  return scored.sort((x, y) => x[1] - y[1]).slice(0, 3).map(([k]) => k);
}
