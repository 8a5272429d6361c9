/**
 * Maintenance (issue 10, item 4): apps taken out of service by hand, and the whole host for planned work. While an app
 * is in maintenance the reconciler holds it (a hold source): its routes are withdrawn, after a drain with
 * GRACEFUL_SHUTDOWN (65535:0) of agent.shutdown_drain when it was announced; its address, NAT rules and checks stay, so
 * /status shows its real health and `off` re-announces a healthy app at once.
 *
 * Four ways in, all by app name (a name, not an app object: the state outlives reloads that remove and add the app):
 * - the API or the CLI (which calls the API) per app: kept in agent.maintenance_state_file, restored at start before
 *   the first pass, so a restart never announces an app in maintenance, not even for a moment;
 * - the API or the CLI for the whole host (every app, those registered later too): kept in the same file;
 * - a file, as ExaBGP's `--disable`: while agent.maintenance_file exists every app is in maintenance; while a file
 *   named after an app exists in agent.maintenance_dir, that app is. Both are polled (stat/readdir, once a second:
 *   fs.watch misses a file created in a folder created later); a file's state is not saved, its existence is.
 * An app is in maintenance while any of them says so; `off` clears only what it names (the API answers what is left).
 *
 * The state file is written atomically (a temp file in the same folder, mode 0600, fsync, rename, fsync of the
 * folder); writes are serialized, each takes the state as it is then. A corrupt file is kept aside as
 * `<file>.corrupt-<time>`, logged, and vipcast starts with nothing in maintenance: it never fails a start.
 */
import { mkdir, open, readFile, readdir, rename, rm, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { AppSpec } from '../plugin-api.js';
import type { Logger } from './logger.js';
import type { Hold } from './reconciler.js';
import { APP_NAME } from './values.js';

/** Who put an app in maintenance. */
export type MaintenanceBy = 'api' | 'cli' | 'file';

export interface MaintenanceEntry {
  /** Date.now() ms when it began. */
  readonly since: number;
  readonly by: MaintenanceBy;
  /** The API caller ("uid 0", "the unix socket", "token@127.0.0.1"), when set through the API or the CLI. */
  readonly caller?: string;
  /** The file whose existence holds it (by file). */
  readonly file?: string;
}

/** What /status and GET /maintenance show of one entry. */
export interface MaintenanceView {
  readonly since: string;
  readonly by: MaintenanceBy;
  readonly caller?: string;
  readonly file?: string;
  /** Held by the host-wide maintenance, not by one of its own. */
  readonly host_wide?: true;
}

export const MAINTENANCE_FILE_VERSION = 1;

/** The state file: `{ version: 1, saved_at, host: entry | null, apps: { NAME: entry } }` (entries by api or cli). */
interface StoredEntry { since: string; by: 'api' | 'cli'; caller?: string }
interface StoredFile { version: number; saved_at: string; host: StoredEntry | null; apps: Record<string, StoredEntry> }

export interface MaintenanceOptions {
  /** agent.maintenance_state_file in force, read at every write ('' = not saved). */
  readonly stateFile: () => string;
  /** agent.maintenance_file in force ('' = none): while it exists, every app is in maintenance. */
  readonly hostFile: () => string;
  /** agent.maintenance_dir in force ('' = none): while `<dir>/<APP>` exists, APP is in maintenance. */
  readonly dir: () => string;
  /** agent.shutdown_drain in force: an announced app entering maintenance is drained this long first (0 = not). */
  readonly drainMs: () => number;
  /** Names of the apps announced now (only those are drained: an app that was not announced never is). */
  readonly announced: () => Iterable<string>;
  /** The state changed: a pass should run (Reconciler.trigger). */
  readonly onChange: () => void;
  readonly log: Logger;
  /** How often the files are looked at (default 1000 ms). */
  readonly pollMs?: number;
}

/** The host-wide entry's key among the manual entries' names ('*' is never an app name). */
export const ALL_APPS = '*';

export class Maintenance {
  /** Set through the API/CLI, by app name. Saved. */
  private readonly manual = new Map<string, MaintenanceEntry>();
  private manualHost: MaintenanceEntry | undefined;
  /** Seen by polling. Not saved: the files are the record. */
  private fileHost: MaintenanceEntry | undefined;
  private readonly fileApps = new Map<string, MaintenanceEntry>();
  /** Apps that were announced when they entered maintenance: drained until then (Date.now() ms). */
  private readonly drains = new Map<string, number>();
  private pollTimer: NodeJS.Timeout | undefined;
  private polling: Promise<void> | undefined;
  private writes: Promise<unknown> = Promise.resolve();
  /** Problems reading the files, by path and code: each logged once until it goes away. */
  private readonly pollProblems = new Set<string>();
  private closed = false;

  constructor(private readonly opts: MaintenanceOptions) {}

  /** Restore the saved state and look at the files once, then poll them. Call before the first pass. */
  async start(): Promise<void> {
    await this.restore();
    await this.poll();
    this.schedulePoll();
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.pollTimer);
  }

  /** The hold source for the reconciler. */
  readonly hold = (app: AppSpec): Hold | undefined => {
    const e = this.entryOf(app.name);
    if (!e) return undefined;
    const drainUntil = this.drains.get(app.name);
    return { reason: `maintenance (${describe(e)})`, ...(drainUntil !== undefined ? { drainUntil } : {}) };
  };

  /** The entry that holds `app` (its own first, then the host-wide ones), or undefined. */
  entryOf(app: string): (MaintenanceEntry & { hostWide?: true }) | undefined {
    const own = this.manual.get(app) ?? this.fileApps.get(app);
    if (own) return own;
    const host = this.manualHost ?? this.fileHost;
    return host ? { ...host, hostWide: true } : undefined;
  }

  view(app: string): MaintenanceView | undefined {
    const e = this.entryOf(app);
    return e ? toView(e) : undefined;
  }

  /** The host-wide maintenance (API/CLI first, then the file), or undefined. */
  get host(): MaintenanceView | undefined {
    const e = this.manualHost ?? this.fileHost;
    return e ? toView(e) : undefined;
  }

  /** Every app name with a maintenance of its own (whether or not such an app is registered now), sorted. */
  names(): string[] {
    return [...new Set([...this.manual.keys(), ...this.fileApps.keys()])].sort();
  }

  /** Everything, for GET /maintenance: the host-wide entries and each app's own entries, by source. */
  list(): { host: { api?: MaintenanceView; file?: MaintenanceView }; apps: Record<string, { api?: MaintenanceView; file?: MaintenanceView }> } {
    const apps: Record<string, { api?: MaintenanceView; file?: MaintenanceView }> = {};
    for (const name of this.names()) {
      const m = this.manual.get(name);
      const f = this.fileApps.get(name);
      apps[name] = { ...(m ? { api: toView(m) } : {}), ...(f ? { file: toView(f) } : {}) };
    }
    return {
      host: { ...(this.manualHost ? { api: toView(this.manualHost) } : {}), ...(this.fileHost ? { file: toView(this.fileHost) } : {}) },
      apps,
    };
  }

  /**
   * Put `app` (or ALL_APPS: the host) in maintenance or take it out, as the API or the CLI asks. Applied at once (a
   * pass is triggered); the promise resolves once the state file has it (rejects when it could not be written: the
   * change is in force anyway, and the next change writes the file again).
   */
  async set(app: string, on: boolean, by: 'api' | 'cli', caller?: string): Promise<void> {
    const entry: MaintenanceEntry = { since: Date.now(), by, ...(caller ? { caller } : {}) };
    // Already so: nothing changes (an `on` keeps its first since), but the file is written again (a failed write).
    if (app === ALL_APPS) {
      if (on === (this.manualHost !== undefined)) return this.save();
      this.manualHost = on ? entry : undefined;
    } else {
      if (on === this.manual.has(app)) return this.save();
      if (on) this.manual.set(app, entry);
      else this.manual.delete(app);
    }
    this.opts.log.info({ app: app === ALL_APPS ? undefined : app, host_wide: app === ALL_APPS || undefined, by, caller, state: on ? 'on' : 'off' },
      `maintenance ${on ? 'on' : 'off'}: ${app === ALL_APPS ? 'every app (host-wide)' : app} by ${by}${caller ? ` (${caller})` : ''}`);
    this.changed();
    await this.save();
  }

  /** After any change: drains begin for announced apps entering maintenance, end for apps leaving it; a pass runs. */
  private changed(): void {
    const drainMs = this.opts.drainMs();
    const now = Date.now();
    for (const name of this.opts.announced()) {
      if (drainMs > 0 && this.entryOf(name) && !this.drains.has(name)) this.drains.set(name, now + drainMs);
    }
    for (const name of [...this.drains.keys()]) if (!this.entryOf(name)) this.drains.delete(name);
    this.opts.onChange();
  }

  // -------------------------------------------------------------------------------------------------------------------
  // The state file

  /** Write the API/CLI state to the file in force; serialized: each write takes the state as it is when it runs. */
  save(): Promise<void> {
    const next = this.writes.then(() => this.write());
    this.writes = next.catch(() => undefined);
    return next;
  }

  private async write(): Promise<void> {
    const file = this.opts.stateFile();
    if (file === '') return;
    const apps: Record<string, StoredEntry> = {};
    for (const [name, e] of [...this.manual].sort(([a], [b]) => a.localeCompare(b))) apps[name] = stored(e);
    const body: StoredFile = { version: MAINTENANCE_FILE_VERSION, saved_at: new Date().toISOString(), host: this.manualHost ? stored(this.manualHost) : null, apps };
    try {
      await writeAtomic(file, `${JSON.stringify(body, null, 2)}\n`);
    } catch (err) {
      this.opts.log.error({ err, file }, 'maintenance state not saved: it is in force now but a restart would lose it');
      throw new Error(`agent.maintenance_state_file: ${file} could not be written: ${(err as Error).message}`);
    }
  }

  /** Read the saved state. A missing file is none; a corrupt one is kept aside and logged, never fatal. */
  async restore(): Promise<void> {
    const file = this.opts.stateFile();
    if (file === '') return;
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') this.opts.log.error({ err, file }, 'maintenance state file could not be read: starting with no app in maintenance');
      return;
    }
    let parsed: { host?: MaintenanceEntry; apps: Map<string, MaintenanceEntry> };
    try {
      parsed = parseStored(text);
    } catch (err) {
      const keptAs = `${file}.corrupt-${new Date().toISOString().replace(/[:.]/g, '-')}`;
      const kept = await rename(file, keptAs).then(() => true, () => false);
      this.opts.log.error({ file, kept_as: kept ? keptAs : undefined, problem: (err as Error).message },
        `maintenance state file is corrupt (${(err as Error).message})${kept ? `: kept as ${keptAs}` : ''}; starting with no app in maintenance`);
      return;
    }
    this.manualHost = parsed.host;
    for (const [name, e] of parsed.apps) this.manual.set(name, e);
    if (parsed.host || parsed.apps.size > 0) {
      this.opts.log.info({ file, host_wide: parsed.host !== undefined, apps: [...parsed.apps.keys()] }, 'maintenance restored from the state file');
    }
  }

  // -------------------------------------------------------------------------------------------------------------------
  // The files (ExaBGP's --disable)

  private schedulePoll(): void {
    if (this.closed) return;
    this.pollTimer = setTimeout(() => {
      void this.poll().finally(() => this.schedulePoll());
    }, this.opts.pollMs ?? 1000);
    this.pollTimer.unref?.();
  }

  /** Look at the files now (one look at a time). */
  poll(): Promise<void> {
    this.polling ??= this.doPoll().finally(() => (this.polling = undefined));
    return this.polling;
  }

  private async doPoll(): Promise<void> {
    let change = false;
    const hostFile = this.opts.hostFile();
    const hostOn = hostFile !== '' && (await this.exists(hostFile));
    if (hostOn && this.fileHost?.file !== hostFile) {
      this.fileHost = { since: Date.now(), by: 'file', file: hostFile };
      this.opts.log.info({ file: hostFile, host_wide: true, state: 'on' }, `maintenance on: every app (host-wide): ${hostFile} exists`);
      change = true;
    } else if (!hostOn && this.fileHost) {
      this.opts.log.info({ file: this.fileHost.file, host_wide: true, state: 'off' }, `maintenance off: every app (host-wide): ${this.fileHost.file} is gone`);
      this.fileHost = undefined;
      change = true;
    }
    const dir = this.opts.dir();
    const present = dir === '' ? new Set<string>() : await this.listDir(dir);
    for (const [name, e] of [...this.fileApps]) {
      if (present.has(name) && e.file === join(dir, name)) continue;
      this.fileApps.delete(name);
      this.opts.log.info({ app: name, file: e.file, state: 'off' }, `maintenance off: ${name}: ${e.file} is gone`);
      change = true;
    }
    for (const name of present) {
      if (this.fileApps.has(name)) continue;
      const file = join(dir, name);
      this.fileApps.set(name, { since: Date.now(), by: 'file', file });
      this.opts.log.info({ app: name, file, state: 'on' }, `maintenance on: ${name}: ${file} exists`);
      change = true;
    }
    if (change && !this.closed) this.changed();
  }

  private async exists(file: string): Promise<boolean> {
    try {
      await stat(file);
      this.pollProblems.delete(file);
      return true;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'ENOENT' && code !== 'ENOTDIR') this.problem(file, err as NodeJS.ErrnoException);
      return false;
    }
  }

  /** App names with a file in `dir` (hidden files, editors' and others', are not app names). */
  private async listDir(dir: string): Promise<Set<string>> {
    try {
      const names = await readdir(dir);
      this.pollProblems.delete(dir);
      return new Set(names.filter((n) => !n.startsWith('.') && APP_NAME.test(n)));
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'ENOENT' && code !== 'ENOTDIR') this.problem(dir, err as NodeJS.ErrnoException);
      return new Set();
    }
  }

  private problem(path: string, err: NodeJS.ErrnoException): void {
    if (this.pollProblems.has(path)) return;
    this.pollProblems.add(path);
    this.opts.log.warn({ err, path }, `maintenance: ${path} cannot be read (${err.code ?? err.message}): treated as absent`);
  }
}

function describe(e: MaintenanceEntry & { hostWide?: true }): string {
  const who = e.by === 'file' ? `file ${e.file}` : `${e.by}${e.caller ? `, ${e.caller}` : ''}`;
  return `${e.hostWide ? 'host-wide, ' : ''}${who}, since ${new Date(e.since).toISOString()}`;
}

function toView(e: MaintenanceEntry & { hostWide?: true }): MaintenanceView {
  return {
    since: new Date(e.since).toISOString(), by: e.by,
    ...(e.caller ? { caller: e.caller } : {}), ...(e.file ? { file: e.file } : {}), ...(e.hostWide ? { host_wide: true as const } : {}),
  };
}

function stored(e: MaintenanceEntry): StoredEntry {
  return { since: new Date(e.since).toISOString(), by: e.by as 'api' | 'cli', ...(e.caller ? { caller: e.caller } : {}) };
}

/** Parse the state file; throws with what is wrong. */
export function parseStored(text: string): { host?: MaintenanceEntry; apps: Map<string, MaintenanceEntry> } {
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (err) {
    throw new Error(`not JSON: ${(err as Error).message}`);
  }
  const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
  if (!isObject(data)) throw new Error('not a JSON object');
  if (data.version !== MAINTENANCE_FILE_VERSION) throw new Error(`version ${JSON.stringify(data.version)} is not ${MAINTENANCE_FILE_VERSION}`);
  const entry = (v: unknown, where: string): MaintenanceEntry => {
    if (!isObject(v)) throw new Error(`${where} is not an object`);
    const since = typeof v.since === 'string' ? Date.parse(v.since) : NaN;
    if (!Number.isFinite(since)) throw new Error(`${where}.since is not a time`);
    if (v.by !== 'api' && v.by !== 'cli') throw new Error(`${where}.by is not "api" or "cli"`);
    if (v.caller !== undefined && typeof v.caller !== 'string') throw new Error(`${where}.caller is not a string`);
    return { since, by: v.by, ...(typeof v.caller === 'string' && v.caller !== '' ? { caller: v.caller } : {}) };
  };
  const host = data.host === null || data.host === undefined ? undefined : entry(data.host, 'host');
  if (!isObject(data.apps)) throw new Error('apps is not an object');
  const apps = new Map<string, MaintenanceEntry>();
  for (const [name, v] of Object.entries(data.apps)) {
    if (!APP_NAME.test(name)) throw new Error(`apps: "${name.slice(0, 80)}" is not an app name`);
    apps.set(name, entry(v, `apps.${name}`));
  }
  return { ...(host ? { host } : {}), apps };
}

/** Write `text` to `file` atomically: a temp file (0600) in the same folder, fsync, rename, fsync of the folder. */
export async function writeAtomic(file: string, text: string): Promise<void> {
  const dir = dirname(file);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const tmp = join(dir, `.${file.slice(dir.length + 1)}.tmp-${process.pid}`);
  try {
    const fh = await open(tmp, 'w', 0o600);
    try {
      await fh.chmod(0o600);
      await fh.writeFile(text);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, file);
  } catch (err) {
    await rm(tmp, { force: true }).catch(() => undefined);
    throw err;
  }
  const d = await open(dir, 'r');
  try {
    await d.sync();
  } finally {
    await d.close();
  }
}
