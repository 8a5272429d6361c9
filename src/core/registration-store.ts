/**
 * HTTP registrations survive a restart (issue 10, item 3): the set of apps registered over HTTP is kept in a JSON
 * file (agent.registrations_file) and registered again at the next start, validated again under the config in force.
 *
 * What is stored are the registration's parameters in gocast's form (name, vip, monitor, nat, vip_communities), in
 * their canonical, validated text: not internal objects, and never a monitor's params (a `consul` monitor's carry the
 * Consul token). A restore feeds them through the same builder as /register (appFromRegistration), so a restored app
 * is exactly what registering it again now would give, and one the policy now refuses is not restored.
 *
 * The file follows the registry (AppRegistry.onChange), not its callers: /register, /unregister, cleanup_timer and a
 * reload's policy removal all change the registry, and every change of an HTTP app schedules a save. Saves are
 * serialized and coalesced: one write at a time, and changes made during a write are written together by the next
 * one, which always takes the registry as it is then, so the last write leaves the file equal to the set in memory.
 * A burst of 1,000 registrations costs a handful of writes, not 1,000 fsyncs. A failed write is retried with backoff.
 *
 * Each write is atomic: a temp file in the same folder (mode 0600), fsync, rename, fsync of the folder. A crash
 * leaves the previous file or the new one, never half of one.
 */
import { mkdir, open, readFile, rename, copyFile, rm } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { AppSpec } from '../plugin-api.js';
import type { Logger } from './logger.js';
import type { AppRegistry, RegistryEvent } from './registry.js';
import { errorDetails } from './errors.js';

/** The registration parameters of one HTTP app, as /register takes them (canonical texts). */
export interface RegistrationParams {
  readonly name: string;
  readonly vip: readonly string[];
  readonly monitor: readonly string[];
  readonly nat: readonly string[];
  readonly vip_communities: readonly string[];
}

export const REGISTRATIONS_FILE_VERSION = 1;

/** The file: `{ "version": 1, "saved_at": ISO time, "registrations": [RegistrationParams, ...] }`, sorted by name. */
export interface RegistrationsFile {
  readonly version: number;
  readonly saved_at: string;
  readonly registrations: readonly RegistrationParams[];
}

/** The parameters that register `app` again: every value in its canonical text (what /status shows). */
export function registrationParams(app: AppSpec): RegistrationParams {
  return {
    name: app.name,
    vip: app.vips.map((v) => v.text),
    monitor: app.monitors.map((m) => m.text),
    nat: app.nats.map((n) => n.text),
    vip_communities: app.communities.map((c) => c.text),
  };
}

/** One entry of the file that was not registered again at start, and why. */
export interface DroppedRegistration {
  readonly name: string;
  readonly reason: string;
}

export interface RestoreResult {
  readonly restored: readonly string[];
  readonly dropped: readonly DroppedRegistration[];
  /** Where an unreadable or corrupt file (or, with malformed entries, a copy of it) was kept. */
  readonly keptAs?: string;
}

/** What /status shows about the file. */
export interface RegistrationStoreStatus {
  readonly file: string;
  /** HTTP apps restored from the file at start and not registered again (with other parameters) since. */
  readonly restored: number;
  readonly saved_at?: string;
  /** A change not yet in the file (a write is under way or waiting for its retry). */
  readonly pending: boolean;
  /** The last write failed (retried with backoff): why. */
  readonly error?: string;
}

export interface RegistrationStoreOptions {
  /** agent.registrations_file of the config in force, read at every write ('' = persistence off). */
  readonly file: () => string;
  readonly log: Logger;
  /** First retry after a failed write; doubles up to 30 s. */
  readonly retryMs?: number;
}

const MAX_RETRY_MS = 30_000;

export class RegistrationStore {
  private registry: AppRegistry | undefined;
  private readonly restoredNames = new Set<string>();
  /** A change not yet written. */
  private dirty = false;
  private writing: Promise<void> | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private retryMs: number;
  private savedAt: string | undefined;
  private lastError: string | undefined;
  /** The path the file was last written to (a reload that changes agent.registrations_file writes the new one). */
  private writtenTo: string | undefined;
  /** Set when the file could be neither read nor kept aside: it is not overwritten during this run. */
  private blocked: string | undefined;
  private closed = false;
  /** Writes done (each one temp file, fsync, rename). */
  private writeCount = 0;
  private readonly onEvent = (ev: RegistryEvent): void => {
    const http = ev.app.source === 'http' || (ev.type === 'changed' && ev.previous.source === 'http');
    if (!http) return;
    if (ev.type !== 'added') this.restoredNames.delete(ev.app.name);
    this.schedule();
  };

  constructor(private readonly opts: RegistrationStoreOptions) {
    this.retryMs = opts.retryMs ?? 1000;
  }

  /** How many times the file was written (successfully) since start. */
  get writes(): number {
    return this.writeCount;
  }

  get file(): string {
    return this.opts.file();
  }

  /** True for an HTTP app restored at start and not registered again with other parameters since. */
  isRestored(name: string): boolean {
    return this.restoredNames.has(name);
  }

  status(): RegistrationStoreStatus {
    return {
      file: this.file, restored: this.restoredNames.size, pending: this.dirty || this.writing !== undefined,
      ...(this.savedAt ? { saved_at: this.savedAt } : {}), ...(this.lastError ? { error: this.lastError } : {}),
    };
  }

  /**
   * Register the file's apps again (before the first reconcile pass: config apps already in the registry win), then
   * follow the registry. `build` validates one entry as /register would (appFromRegistration under the config in
   * force) and throws with the reason when it is refused. Entries refused, malformed, or named like an app of another
   * source are logged with the reason and their parameters, and dropped from the file. Never throws: an unreadable or
   * corrupt file is kept aside as `<file>.corrupt-<time>` and vipcast starts without registrations.
   */
  async restore(registry: AppRegistry, build: (params: RegistrationParams) => AppSpec): Promise<RestoreResult> {
    this.registry = registry;
    const file = this.file;
    const out: { restored: string[]; dropped: DroppedRegistration[]; keptAs?: string } = { restored: [], dropped: [] };
    if (file !== '') {
      const loaded = await this.read(file);
      if (loaded.keptAs) out.keptAs = loaded.keptAs;
      out.dropped.push(...loaded.malformed);
      const seen = new Set<string>();
      for (const params of loaded.entries) {
        const drop = (reason: string): void => void out.dropped.push({ name: params.name, reason });
        if (seen.has(params.name)) {
          drop('the file lists this name twice (the first entry is kept)');
          continue;
        }
        seen.add(params.name);
        const existing = registry.get(params.name);
        if (existing) {
          drop(`an app of that name comes from ${existing.source} now (it wins, as it would over a /register)`);
          continue;
        }
        try {
          registry.upsert(build(params));
          this.restoredNames.add(params.name);
          out.restored.push(params.name);
        } catch (err) {
          drop(errorDetails(err).join('; '));
        }
      }
      const byName = new Map(loaded.entries.map((e) => [e.name, e]));
      for (const d of out.dropped) {
        this.opts.log.error({ app: d.name, registration: byName.get(d.name), reason: d.reason, file }, `HTTP registration not restored: ${d.reason}`);
      }
      if (loaded.entries.length > 0 || out.dropped.length > 0) {
        this.opts.log.info({ file, restored: out.restored, dropped: out.dropped.length }, `HTTP registrations restored: ${out.restored.length} of ${loaded.entries.length + loaded.malformed.length}`);
      }
    }
    registry.onChange(this.onEvent);
    // The file must say what is registered: without the dropped entries (or a fresh one after a corrupt file).
    if (out.dropped.length > 0 || out.keptAs) this.schedule();
    else this.writtenTo = file;
    return out;
  }

  /** A reload may have moved agent.registrations_file: write the set to the new file now. */
  configChanged(): void {
    if (this.registry && !this.closed && this.file !== this.writtenTo) this.schedule();
  }

  /** Resolves once the file holds every change made before the call (or the last write attempt failed). */
  async flush(): Promise<void> {
    if (this.retryTimer) {
      clearTimeout(this.retryTimer);
      this.retryTimer = undefined;
      if (!this.writing) this.writing = this.run();
    }
    while (this.writing) await this.writing;
  }

  /** Stop following the registry after writing what is pending (shutdown). Safe to call twice. */
  async close(): Promise<void> {
    await this.flush();
    this.closed = true;
    clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
  }

  private schedule(): void {
    if (this.closed) return;
    this.dirty = true;
    if (!this.writing && !this.retryTimer) this.writing = this.run();
  }

  /** The one writer: one write at a time; changes made meanwhile go into the next write. */
  private async run(): Promise<void> {
    try {
      // Let the rest of a burst (several registry events in one turn) land first.
      await new Promise<void>((resolve) => setImmediate(resolve));
      while (this.dirty) {
        this.dirty = false;
        const file = this.file;
        if (file === '' || file === this.blocked) {
          this.writtenTo = file;
          continue;
        }
        try {
          await writeAtomic(file, this.snapshot());
          if (this.lastError) this.opts.log.info({ file }, 'registrations file written again');
          this.writeCount++;
          this.savedAt = new Date().toISOString();
          this.lastError = undefined;
          this.writtenTo = file;
          this.retryMs = this.opts.retryMs ?? 1000;
        } catch (err) {
          const first = this.lastError === undefined;
          this.lastError = (err as Error).message;
          this.dirty = true;
          if (first) this.opts.log.error({ err, file, retry_ms: this.retryMs }, 'could not write the registrations file: HTTP registrations would not survive a restart; retrying');
          if (!this.closed) {
            this.retryTimer = setTimeout(() => {
              this.retryTimer = undefined;
              if (!this.writing) this.writing = this.run();
            }, this.retryMs);
            this.retryTimer.unref();
            this.retryMs = Math.min(this.retryMs * 2, MAX_RETRY_MS);
          }
          return;
        }
      }
    } finally {
      this.writing = undefined;
    }
  }

  private snapshot(): RegistrationsFile {
    const apps = (this.registry?.all() ?? []).filter((a) => a.source === 'http').sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    return { version: REGISTRATIONS_FILE_VERSION, saved_at: new Date().toISOString(), registrations: apps.map(registrationParams) };
  }

  private async read(file: string): Promise<{ entries: RegistrationParams[]; malformed: DroppedRegistration[]; keptAs?: string }> {
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (err) {
      // No such file (or no such folder): nothing to restore, and nothing to protect from the next write.
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR') return { entries: [], malformed: [] };
      return this.setAside(file, `unreadable (${(err as Error).message})`);
    }
    let data: unknown;
    try {
      data = JSON.parse(text);
    } catch (err) {
      return this.setAside(file, `not JSON (${(err as Error).message})`);
    }
    const d = data as Partial<RegistrationsFile> | null;
    if (typeof d !== 'object' || d === null || Array.isArray(d) || !Array.isArray(d.registrations)) {
      return this.setAside(file, 'not a vipcast registrations file ({"version":1,"registrations":[...]})');
    }
    if (d.version !== REGISTRATIONS_FILE_VERSION) return this.setAside(file, `version ${JSON.stringify(d.version)} is not ${REGISTRATIONS_FILE_VERSION}`);
    const entries: RegistrationParams[] = [];
    const malformed: DroppedRegistration[] = [];
    d.registrations.forEach((r: unknown, i) => {
      const why = entryProblem(r);
      if (why) malformed.push({ name: typeof (r as { name?: unknown })?.name === 'string' ? (r as { name: string }).name : `registrations[${i}]`, reason: `registrations[${i}]: ${why}` });
      else entries.push(normalise(r as Record<string, unknown>));
    });
    let keptAs: string | undefined;
    if (malformed.length > 0) {
      // The next write drops them: keep the file as it was for whoever looks into it.
      const aside = asidePath(file);
      await copyFile(file, aside).then(
        () => { keptAs = aside; },
        (err: unknown) => this.opts.log.error({ err, file }, 'registrations file has malformed entries; could not keep a copy of it'),
      );
    }
    return { entries, malformed, ...(keptAs ? { keptAs } : {}) };
  }

  private async setAside(file: string, reason: string): Promise<{ entries: RegistrationParams[]; malformed: DroppedRegistration[]; keptAs?: string }> {
    const keptAs = asidePath(file);
    try {
      await rename(file, keptAs);
      this.opts.log.error({ file, keptAs, reason }, `registrations file is ${reason}: kept aside as ${keptAs}; vipcast starts without HTTP registrations (registrants must register again)`);
      return { entries: [], malformed: [], keptAs };
    } catch (err) {
      // Neither readable nor movable: don't overwrite the only copy of the registrations during this run.
      this.blocked = file;
      this.opts.log.error({ err, file, reason }, `registrations file is ${reason} and could not be kept aside: vipcast starts without HTTP registrations and does not write ${file} during this run`);
      return { entries: [], malformed: [] };
    }
  }
}

function asidePath(file: string): string {
  return `${file}.corrupt-${new Date().toISOString().replace(/[:.]/g, '-')}`;
}

const LISTS = ['vip', 'monitor', 'nat', 'vip_communities'] as const;

function entryProblem(r: unknown): string | undefined {
  if (typeof r !== 'object' || r === null || Array.isArray(r)) return 'not an object';
  const e = r as Record<string, unknown>;
  if (typeof e.name !== 'string' || e.name === '') return 'no name';
  for (const k of LISTS) {
    const v = e[k];
    if (v !== undefined && (!Array.isArray(v) || v.some((x) => typeof x !== 'string'))) return `${k}: not a list of strings`;
  }
  return undefined;
}

function normalise(e: Record<string, unknown>): RegistrationParams {
  const list = (k: (typeof LISTS)[number]): string[] => (Array.isArray(e[k]) ? [...(e[k] as string[])] : []);
  return { name: e.name as string, vip: list('vip'), monitor: list('monitor'), nat: list('nat'), vip_communities: list('vip_communities') };
}

/** Temp file in the same folder (0600), fsync, rename over `file`, fsync the folder. */
export async function writeAtomic(file: string, data: unknown): Promise<void> {
  const dir = dirname(file);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const tmp = `${file}.${process.pid}.tmp`;
  const fh = await open(tmp, 'w', 0o600);
  try {
    await fh.chmod(0o600);
    await fh.writeFile(JSON.stringify(data, null, 1) + '\n');
    await fh.sync();
  } catch (err) {
    await fh.close().catch(() => undefined);
    await rm(tmp, { force: true });
    throw err;
  }
  await fh.close();
  await rename(tmp, file);
  const dh = await open(dir, 'r');
  try {
    await dh.sync();
  } finally {
    await dh.close();
  }
}
