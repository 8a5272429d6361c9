/** The reconciler's public types: its options, its per-app status and its counters. */
import type { AppSpec } from '../plugin-api.js';
import type { BgpConfig } from './config-types.js';
import type { Hold } from './desired-state.js';

export interface ReconcilerOptions {
  bgp: Pick<BgpConfig, 'communities' | 'origin'>;
  cleanupTimerMs: number;
  removeVipOnWithdraw: boolean;
  /** Full resync period. */
  resyncMs?: number;
  /** Retry delay after a failed action. */
  retryMs?: number;
}

/** Asked at every pass for every UP app: a hold, or undefined (announce). Call `Reconciler.trigger()` when it changes. */
export type HoldSource = (app: AppSpec) => Hold | undefined;

export interface AppStatus {
  readonly app: string;
  readonly source: string;
  /** Routes in the speaker's RIB for this app. */
  readonly announced: string[];
  /** Address and NAT held on the host. */
  readonly hostHeld: boolean;
  /** When a DOWN app's cleanup timer fires (ms since epoch), if running. */
  readonly cleanupAt?: number;
  /** The last effect that failed for this app, if it has not succeeded since. */
  readonly error?: string;
  /** Why the app is not announced although its checks pass (maintenance, flap damping), and whether it is draining. */
  readonly held?: { readonly reason: string; readonly drainingUntil?: number };
}

export interface ReconcilerStats {
  passes: number;
  fullPasses: number;
  announces: number;
  withdraws: number;
  errors: number;
}
