/**
 * The check, run in vipcast's worker threads (never on its main thread): up while the file exists and its last
 * modification is at most `maxAgeMs` old.
 */
import { stat } from 'node:fs/promises';
import { defineCheck } from 'vipcast/plugin-api';
import { formatDuration, type FileAgeParams } from './params.js';

export const check = defineCheck<FileAgeParams>(async (params, ctx) => {
  // stat answers at once on a local disk; on a hung NFS mount it may not: give up when vipcast's timeout fires.
  ctx.signal.throwIfAborted();
  let mtimeMs: number;
  try {
    mtimeMs = (await stat(params.path)).mtimeMs;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    return { ok: false, reason: `${params.path}: ${code === 'ENOENT' ? 'missing' : (err as Error).message}` };
  }
  const ageMs = Math.max(0, Math.round(Date.now() - mtimeMs));
  const age = ageMs < 10_000 ? `${ageMs} ms` : `${Math.round(ageMs / 1000)} s`;
  return { ok: ageMs <= params.maxAgeMs, reason: `${params.path} modified ${age} ago (max ${formatDuration(params.maxAgeMs)})` };
});
