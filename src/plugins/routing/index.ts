/**
 * The routing family's daemon-level part: the managed speaker. Routers themselves are plugins (./gobgp/plugin.ts,
 * ./dry-run, or a package of `plugins:`), built per config generation by src/core/container.ts from the
 * PluginRegistry by `routing.plugin`.
 */
import type { RoutingConfig } from '../../core/config-types.js';
import type { Logger } from '../../core/logger.js';

/** A speaker process vipcast runs itself (a managed gobgpd): a daemon-level component, kept across reloads. */
export interface ManagedSpeaker {
  /** The gRPC target the routers of every generation connect to. */
  readonly address: string;
  /** The speaker's pid while it runs. */
  readonly pid: number | undefined;
  /** Unexpected exits (each followed by a restart). */
  readonly restarts: number;
  /** Resolves once the speaker answers; rejects with VIPCAST_ERR_SPEAKER naming the setting at fault. */
  start(): Promise<void>;
  /** SIGTERM, then SIGKILL (also when it is stopped); safe twice. */
  stop(): Promise<void>;
}

/**
 * The managed gobgpd of `routing` (not started), or undefined when vipcast runs none: routing.gobgp.managed off, or a
 * dry run (which never starts gobgpd).
 */
export async function createManagedSpeaker(routing: RoutingConfig, dryRun: boolean, log: Logger, onRestart?: () => void): Promise<ManagedSpeaker | undefined> {
  if (dryRun || routing.plugin !== 'gobgp' || !routing.gobgp.managed) return undefined;
  const { ManagedGobgpd } = await import('./gobgp/managed.js');
  return new ManagedGobgpd({ binary: routing.gobgp.binary, socketDir: routing.gobgp.socketDir, log, ...(onRestart ? { onRestart } : {}) });
}
