/**
 * Runs the stages of plan.ts against the world, each on the model as the effects before it left it: an effect that
 * failed leaves the model as it was, so later stages see it (an address that could not be added gets no rules and no
 * route). Shutdown can begin while a pass runs (it waits for the effect in flight, not for the whole pass): every
 * step checks `stopped()` first, so nothing is re-added after shutdown withdrew and cleaned up.
 */
import type { Desired } from './desired-state.js';
import { BULK_MIN, type Effects, type Fail } from './effects.js';
import { announces, missingVips, natBringUp, natTearDown, natWantedHere, vipsToRemove, withdrawsAfter, withdrawsFirst, type Model } from './plan.js';

export interface ApplyHooks {
  readonly fail: Fail;
  /** True once shutdown began: the pass ends at its next step. */
  readonly stopped: () => boolean;
  /** Why an app's route is withdrawn (its health, a hold, gone), for the log. */
  readonly whyNot: (app: string) => string;
  /** The app has an error reported this pass already (a missing address is not reported twice). */
  readonly hasError: (app: string) => boolean;
}

export async function applyPlan(fx: Effects, model: Model, desired: Desired, hooks: ApplyHooks): Promise<void> {
  // 1. Withdraw the routes of apps that are not UP any more (or gone, held, or whose VIP moved to another app).
  for (const { route, why } of withdrawsFirst(model, desired)) {
    if (hooks.stopped()) return;
    await fx.withdraw(model, route, why === 'owner-changed' ? 'owner changed' : hooks.whyNot(route.app), hooks.fail);
  }

  // 2. Addresses before rules before routes.
  const missing = missingVips(model, desired);
  if (hooks.stopped()) return;
  if (missing.length >= BULK_MIN && fx.host.addVips) {
    try {
      const failures = await fx.host.addVips(missing);
      for (const v of missing) {
        const err = failures.get(v.prefix.text);
        if (err) hooks.fail(v.app, `add address ${v.prefix.text}`, err);
        else model.vips.set(v.prefix.text, v);
      }
    } catch (err) {
      for (const v of missing) hooks.fail(v.app, `add address ${v.prefix.text}`, err);
    }
  } else {
    for (const vip of missing) {
      if (hooks.stopped()) return;
      try {
        await fx.host.addVip(vip);
        model.vips.set(vip.prefix.text, vip);
      } catch (err) {
        hooks.fail(vip.app, `add address ${vip.prefix.text}`, err);
      }
    }
  }
  // 3. Rules only where the address is on the host; stages 4 and 5 touch routes only, so this holds for 6 too.
  const natBlocked = new Set<string>();
  const wantedHere = natWantedHere(model, desired);
  if (hooks.stopped()) return;
  const natFailed = await fx.nat(model, natBringUp(model, desired, wantedHere), natBlocked, hooks.fail);
  // An app whose NAT rules can't be made is not announced (traffic to its VIP would not reach the service): one
  // announced before (its NAT target went away with a reload) is withdrawn now.
  for (const [, route] of [...model.routes]) {
    if (!natFailed.has(route.app)) continue;
    if (hooks.stopped()) return;
    await fx.withdraw(model, route, 'its NAT rules can\'t be made', hooks.fail);
  }

  // 4. Announce what is missing or changed, only where the address is on the host.
  const a = announces(model, desired, natBlocked);
  // A path an earlier run left with exactly these attributes: adopted, no UPDATE (a restart doesn't flap).
  for (const route of a.adopt) model.routes.set(route.prefix.text, route);
  for (const route of a.notOnHost) {
    if (!hooks.hasError(route.app)) hooks.fail(route.app, `announce ${route.prefix.text}`, new Error('address is not on the host'));
  }
  await fx.announce(model, a.send, hooks.fail, undefined, hooks.stopped);

  // 5. Make-before-break: the routes an UP app no longer wants go now that its new VIPs are out.
  for (const route of withdrawsAfter(model, desired)) {
    if (hooks.stopped()) return;
    await fx.withdraw(model, route, 'VIP removed from the app', hooks.fail);
  }

  // 6. Tear-down: rules, then addresses, of everything no longer held.
  if (hooks.stopped()) return;
  await fx.nat(model, natTearDown(model, desired, wantedHere), natBlocked, hooks.fail);
  for (const vip of vipsToRemove(model, desired)) {
    if (hooks.stopped()) return;
    try {
      await fx.host.removeVip(vip);
      model.vips.delete(vip.prefix.text);
    } catch (err) {
      hooks.fail(vip.app, `remove address ${vip.prefix.text}`, err);
    }
  }
}
