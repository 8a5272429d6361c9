/**
 * The plan of a reconcile pass: pure functions from the actual state (model) and the desired state to the effects,
 * stage by stage, in the safe order of invariant 3:
 *
 *   1. withdraw routes not wanted any more (app DOWN, gone, held, or its VIP now another app's)
 *   2. add missing addresses
 *   3. NAT rules (only where the address is on the host)
 *   4. announce what is missing or changed (only where the address is on the host and the app's NAT rules are in)
 *   5. make-before-break: withdraw the routes an UP app no longer wants (its new VIPs are out now)
 *   6. tear-down: NAT rules, then addresses, of what is no longer held (never under a route still announced)
 *
 * The reconciler runs the stages one after the other, each on the model as the earlier effects left it (an effect that
 * failed leaves the model as it was, so later stages see it). `plan()` runs them all on a copy assuming every effect
 * succeeds: the ordered steps a pass would take, for tests and dry runs.
 */
import type { NatBinding, Route, VipBinding } from '../plugin-api.js';
import type { Desired } from './desired-state.js';
import { routeKey } from '../plugins/routing/route-attributes.js';

/** What vipcast has in the world: the speaker's routes and the host's addresses and rules, by prefix text. */
export interface Model {
  routes: Map<string, Route>;
  vips: Map<string, VipBinding>;
  nat: NatBinding[];
}

/** A withdraw, with why: the app is not announced any more, or the prefix is now another app's. */
export interface Withdraw {
  readonly route: Route;
  readonly why: 'not-wanted' | 'owner-changed';
}

/** Stage 1: routes of apps that are not UP any more (or gone, held, or whose VIP moved to another app). */
export function withdrawsFirst(model: Model, desired: Desired): Withdraw[] {
  const out: Withdraw[] = [];
  for (const [key, route] of model.routes) {
    const want = desired.routes.get(key);
    if (want && (want.app === route.app || route.app === '')) continue; // '' = our path from an earlier run: replaced in stage 4
    // Routes of UP apps that merely lost a VIP (a VIP change) go in stage 5, after the new VIP is announced.
    if (!want && (desired.upApps.has(route.app) || desired.undecided.has(key))) continue;
    out.push({ route, why: want ? 'owner-changed' : 'not-wanted' });
  }
  return out;
}

/** Stage 2: addresses wanted and not on the host (or on it for another app). */
export function missingVips(model: Model, desired: Desired): VipBinding[] {
  return [...desired.vips.values()].filter((v) => model.vips.get(v.prefix.text)?.app !== v.app);
}

/** The wanted rules whose address is on the host: rules go in only there. */
export function natWantedHere(model: Model, desired: Desired): NatBinding[] {
  return desired.nat.filter((n) => model.vips.has(n.vip.text));
}

/**
 * Stage 3: the NAT rules to write: the wanted ones whose address is on the host, plus the rules of a VIP still
 * announced (or undecided) that no longer wants them: they stay until its withdraw (stage 6 drops them).
 */
export function natBringUp(model: Model, desired: Desired, wantedHere = natWantedHere(model, desired)): NatBinding[] {
  const keep = (n: NatBinding) => (model.routes.get(n.vip.text)?.app === n.app || desired.undecided.has(n.vip.text)) && !desired.vips.has(n.vip.text);
  return [...wantedHere, ...model.nat.filter(keep)];
}

export interface Announces {
  /** Routes to send, with whether they replace a path in the speaker (an implicit replace, no withdraw). */
  readonly send: Array<{ route: Route; replaces: boolean }>;
  /** Paths an earlier run left with exactly the wanted attributes, for an app whose address is here: taken as ours, no UPDATE. */
  readonly adopt: Route[];
  /** Wanted routes whose address is not on the host (its add failed): not announced. */
  readonly notOnHost: Route[];
}

/** Stage 4: what is missing or changed in the speaker, only where the address is on the host and the NAT is in. */
export function announces(model: Model, desired: Desired, natBlocked: ReadonlySet<string> = new Set()): Announces {
  const send: Array<{ route: Route; replaces: boolean }> = [];
  const adopt: Route[] = [];
  const notOnHost: Route[] = [];
  for (const [key, route] of desired.routes) {
    const have = model.routes.get(key);
    const here = model.vips.get(key)?.app === route.app;
    // The very route announced before (desired-state.ts keeps each app's route objects): nothing to compare.
    if (have === route) continue;
    if (have && (have.app === route.app || have.app === '') && routeKey(have) === routeKey(route)) {
      if (have.app === route.app) continue;
      if (here) {
        adopt.push(route);
        continue;
      }
    }
    if (!here) {
      notOnHost.push(route);
      continue;
    }
    if (natBlocked.has(route.app)) continue;
    send.push({ route, replaces: have !== undefined });
  }
  return { send, adopt, notOnHost };
}

/** Stage 5: make-before-break: routes no app wants any more (the VIP left its UP app), now that new VIPs are out. */
export function withdrawsAfter(model: Model, desired: Desired): Route[] {
  return [...model.routes].filter(([key]) => !desired.routes.has(key) && !desired.undecided.has(key)).map(([, r]) => r);
}

/** Stage 6a: the NAT rules after the tear-down: the wanted ones (as in stage 3) plus those of undecided prefixes. */
export function natTearDown(model: Model, desired: Desired, wantedHere: readonly NatBinding[]): NatBinding[] {
  return [...wantedHere, ...model.nat.filter((n) => desired.undecided.has(n.vip.text) && !desired.vips.has(n.vip.text))];
}

/** Stage 6b: addresses no longer held, never one under a route still announced or a rule still in place. */
export function vipsToRemove(model: Model, desired: Desired): VipBinding[] {
  const out: VipBinding[] = [];
  for (const [key, vip] of model.vips) {
    if (desired.vips.get(key)?.app === vip.app || desired.undecided.has(key)) continue;
    if (model.routes.has(key)) continue; // still announced (its withdraw failed): keep the address under it
    if (model.nat.some((n) => n.vip.text === key)) continue; // its rules failed to go: keep the address they use
    out.push(vip);
  }
  return out;
}

/** Order-independent identity of a set of NAT rules. */
export function natKey(rules: readonly NatBinding[]): string {
  return rules.map((n) => `${n.app}|${n.vip.text}|${n.rule.text}`).sort().join('\n');
}

/** One effect of a pass, as `plan()` lists them. */
export type Step =
  | { readonly op: 'withdraw'; readonly prefix: string; readonly app: string; readonly stage: 'first' | 'after' }
  | { readonly op: 'add-vip'; readonly prefix: string; readonly app: string }
  | { readonly op: 'nat'; readonly rules: readonly string[] }
  | { readonly op: 'adopt'; readonly prefix: string; readonly app: string }
  | { readonly op: 'announce'; readonly prefix: string; readonly app: string; readonly replaces: boolean }
  | { readonly op: 'remove-vip'; readonly prefix: string; readonly app: string };

/**
 * Every step of a pass, in order, assuming each effect succeeds (the model is copied, not changed). A NAT write
 * appears only when the rules change; `rules` lists `vip|rule` texts.
 */
export function plan(actual: Model, desired: Desired): Step[] {
  const model: Model = { routes: new Map(actual.routes), vips: new Map(actual.vips), nat: [...actual.nat] };
  const steps: Step[] = [];
  const setNat = (rules: NatBinding[]) => {
    if (natKey(rules) === natKey(model.nat)) return;
    model.nat = rules;
    steps.push({ op: 'nat', rules: rules.map((n) => `${n.vip.text}|${n.rule.text}`).sort() });
  };
  for (const { route } of withdrawsFirst(model, desired)) {
    model.routes.delete(route.prefix.text);
    steps.push({ op: 'withdraw', prefix: route.prefix.text, app: route.app, stage: 'first' });
  }
  for (const v of missingVips(model, desired)) {
    model.vips.set(v.prefix.text, v);
    steps.push({ op: 'add-vip', prefix: v.prefix.text, app: v.app });
  }
  const wantedHere = natWantedHere(model, desired);
  setNat(natBringUp(model, desired, wantedHere));
  const a = announces(model, desired);
  for (const r of a.adopt) {
    model.routes.set(r.prefix.text, r);
    steps.push({ op: 'adopt', prefix: r.prefix.text, app: r.app });
  }
  for (const { route, replaces } of a.send) {
    model.routes.set(route.prefix.text, route);
    steps.push({ op: 'announce', prefix: route.prefix.text, app: route.app, replaces });
  }
  for (const route of withdrawsAfter(model, desired)) {
    model.routes.delete(route.prefix.text);
    steps.push({ op: 'withdraw', prefix: route.prefix.text, app: route.app, stage: 'after' });
  }
  setNat(natTearDown(model, desired, wantedHere));
  for (const v of vipsToRemove(model, desired)) {
    model.vips.delete(v.prefix.text);
    steps.push({ op: 'remove-vip', prefix: v.prefix.text, app: v.app });
  }
  return steps;
}
