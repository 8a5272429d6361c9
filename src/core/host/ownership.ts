/**
 * The host state file: which loopback addresses vipcast added (owned) or found already there (adopted), per app.
 * Written before an address is added and atomically (temp file + rename); a corrupt file is set aside, never
 * rewritten in place; malformed records are ignored, the file as it was kept aside. See linux.ts and docs/HOST.md.
 */
import { copyFile, mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { VipcastError } from '../errors.js';
import type { Logger } from '../logger.js';
import { parsePrefix } from '../values.js';
import { checkVipBinding } from './checks.js';
import { trackVipStateFile } from '../host-addresses.js';

/** One address the state file records: `owned` addresses were added by vipcast, the others were adopted. */
export interface VipRecord {
  app: string;
  prefix: string;
  label?: string;
  owned: boolean;
}

export class OwnershipState {
  private records: VipRecord[] | undefined;
  private loading: Promise<VipRecord[]> | undefined;
  private keptAs: string | undefined;

  constructor(readonly stateFile: string, private readonly log: Logger) {
    // The prefix policy must not count the addresses recorded here as the host's own (host-addresses.ts).
    trackVipStateFile(stateFile);
  }

  /** Where a corrupt state file found at start was kept (set when there was one). */
  get corruptKeptAs(): string | undefined {
    return this.keptAs;
  }

  /** The records, read from the file once; later calls return the same (live) array. */
  load(): Promise<VipRecord[]> {
    if (this.records) return Promise.resolve(this.records);
    // One read, however many callers: a corrupt file is set aside once.
    this.loading ??= this.read().then((records) => {
      this.records = records;
      this.loading = undefined;
      return records;
    });
    return this.loading;
  }

  /** Replace the records (in memory: `save` writes them). */
  replace(records: VipRecord[]): void {
    this.records = records;
  }

  /** Forget app's record of prefix (in memory). Only after `load`. */
  drop(app: string, prefix: string): void {
    this.records = this.records!.filter((r) => !(r.app === app && r.prefix === prefix));
  }

  /** Add or replace app's record of the prefix (in memory). Only after `load`. */
  upsert(rec: VipRecord): void {
    const records = this.records!;
    const i = records.findIndex((r) => r.app === rec.app && r.prefix === rec.prefix);
    if (i === -1) records.push(rec);
    else records[i] = rec;
  }

  /** No records, no file (after every owned address is gone). */
  async forget(): Promise<void> {
    this.records = [];
    await rm(this.stateFile, { force: true });
  }

  private async read(): Promise<VipRecord[]> {
    let text: string;
    try {
      text = await readFile(this.stateFile, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
        this.log.error({ err, stateFile: this.stateFile }, 'host state file unreadable: vipcast owns no loopback address until it adds one');
      }
      return [];
    }
    let data: unknown;
    try {
      data = JSON.parse(text);
    } catch (err) {
      return this.setAside(`not JSON (${(err as Error).message})`);
    }
    const vips = (data as { vips?: unknown } | null)?.vips;
    if (typeof data !== 'object' || data === null || Array.isArray(data) || !Array.isArray(vips)) {
      return this.setAside('not a vipcast state file ({"version":1,"vips":[...]})');
    }
    // Only well-formed records are trusted: a hand-edited file must not make vipcast delete arbitrary addresses.
    // Prefixes are kept in their canonical text, the key of the addresses on lo (see loopback.ts).
    let malformed = 0;
    const records = (vips as VipRecord[]).flatMap((r) => {
      try {
        const prefix = parsePrefix(r.prefix, 'state', false);
        checkVipBinding({ app: r.app, prefix });
        if (typeof r.owned !== 'boolean' || (r.label !== undefined && typeof r.label !== 'string')) throw new Error('owned/label');
        return [{ app: r.app, prefix: prefix.text, owned: r.owned, ...(r.label !== undefined ? { label: r.label } : {}) }];
      } catch {
        malformed++;
        this.log.warn({ record: r, stateFile: this.stateFile }, 'ignoring a malformed record in the host state file');
        return [];
      }
    });
    if (malformed > 0) {
      // The next write drops them: keep the file as it was for whoever looks into it.
      const keptAs = this.asidePath();
      await copyFile(this.stateFile, keptAs).then(
        () => this.log.error({ stateFile: this.stateFile, keptAs, malformed }, 'host state file has malformed records: ignored; the file as it was is kept aside'),
        (err: unknown) => this.log.error({ err, stateFile: this.stateFile, malformed }, 'host state file has malformed records: ignored (could not keep a copy)'),
      );
    }
    return records;
  }

  private asidePath(): string {
    return `${this.stateFile}.corrupt-${new Date().toISOString().replace(/[:.]/g, '-')}`;
  }

  /**
   * A state file that is not one (garbage, a truncated write by something else, a hand edit gone wrong) is renamed
   * aside and reported with both paths, never rewritten in place: it is the only evidence of which addresses an
   * earlier run added. vipcast starts with no records: what it adds now is recorded in a fresh file and removed at
   * exit; an address already on lo is served but never removed (nobody can tell whose it is), and said so.
   */
  private async setAside(reason: string): Promise<VipRecord[]> {
    const keptAs = this.asidePath();
    try {
      await rename(this.stateFile, keptAs);
      this.keptAs = keptAs;
      this.log.error({ stateFile: this.stateFile, keptAs, reason }, `host state file is corrupt (${reason}): kept aside as ${keptAs}; vipcast starts a new one and can't tell which addresses already on lo an earlier run added (they are served, never removed: check ${keptAs} and remove leftovers with ip addr del)`);
    } catch (err) {
      this.keptAs = this.stateFile;
      this.log.error({ err, stateFile: this.stateFile, reason }, `host state file is corrupt (${reason}) and could not be kept aside: vipcast starts a new one`);
    }
    return [];
  }

  /** Write the state file atomically (temp file + rename): a crash leaves the old or the new file, never half. */
  async save(): Promise<void> {
    const records = await this.load();
    const tmp = `${this.stateFile}.${process.pid}.tmp`;
    try {
      await mkdir(dirname(this.stateFile), { recursive: true, mode: 0o755 });
      await writeFile(tmp, JSON.stringify({ version: 1, vips: records }, null, 1) + '\n', { mode: 0o644 });
      await rename(tmp, this.stateFile);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'EACCES' || code === 'EPERM' || code === 'EROFS') {
        throw new VipcastError('VIPCAST_ERR_HOST_PERMISSION', `cannot write the host state file ${this.stateFile} (run as root): ${String(err)}`, { cause: err });
      }
      throw new VipcastError('VIPCAST_ERR_HOST', `cannot write the host state file ${this.stateFile}: ${String(err)}`, { cause: err });
    }
  }
}
