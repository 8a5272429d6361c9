/**
 * Worker-thread entry of the load-time check of a monitor plugin's `workerModule` (plugin-loader.ts,
 * `probeWorkerModule`): import the module the way the check pool's workers will (check-worker.ts `loadCheck`) and
 * answer once whether it has a check function, then the thread is terminated. The module is the plugin's own code:
 * it is imported here, in a short-lived thread with a memory limit, never on vipcast's main thread.
 */
import { parentPort, workerData } from 'node:worker_threads';

/** What the probe answers. */
export type ProbeAnswer =
  | { readonly loaded: true; readonly check: boolean; readonly exports: readonly string[] }
  | { readonly loaded: false; readonly error: string; readonly code?: string };

/** The check pool's rule (check-worker.ts findCheck): a function, or an object with a `check` function. */
function hasCheck(value: unknown): boolean {
  if (typeof value === 'function') return true;
  return typeof value === 'object' && value !== null && typeof (value as { check?: unknown }).check === 'function';
}

async function probe(url: string): Promise<ProbeAnswer> {
  try {
    const mod = await import(url) as Record<string, unknown>;
    const def = mod.default as Record<string, unknown> | undefined;
    const check = hasCheck(mod) || hasCheck(def) || hasCheck(def?.default);
    const exports = Object.keys(mod).filter((k) => k !== 'default' && k !== 'module.exports');
    if (def && typeof def === 'object') for (const k of Object.keys(def)) if (!exports.includes(k)) exports.push(k);
    return { loaded: true, check, exports: exports.slice(0, 20) };
  } catch (err) {
    const code = (err as NodeJS.ErrnoException)?.code;
    return { loaded: false, error: err instanceof Error ? err.message : String(err), ...(typeof code === 'string' ? { code } : {}) };
  }
}

if (parentPort) parentPort.postMessage(await probe((workerData as { url: string }).url));
