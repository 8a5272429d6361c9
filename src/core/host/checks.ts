/**
 * Defense in depth (invariant 4): the host implementations (real and dry-run) check every binding again before
 * anything reaches `ip` or `iptables`: it must have come out of the value parsers, with a safe app name.
 */
import type { NatBinding, Prefix, VipBinding } from '../../plugin-api.js';
import { valueError } from '../errors.js';
import { APP_NAME, parseNat, parsePrefix } from '../values.js';

function samePrefix(a: Prefix, b: Prefix): boolean {
  return a.address === b.address && a.length === b.length && a.family === b.family && a.text === b.text;
}

/** Defense in depth (invariant 4): nothing reaches `ip` that didn't come out of parsePrefix, with a safe app name. */
export function checkVipBinding(binding: VipBinding, path = 'vip'): void {
  if (typeof binding?.app !== 'string' || !APP_NAME.test(binding.app)) {
    throw valueError(`${path}.app`, `${JSON.stringify(binding?.app)} is not a valid app name`);
  }
  const p = binding.prefix;
  if (typeof p?.text !== 'string' || !samePrefix(parsePrefix(p.text, `${path}.prefix`, false), p)) {
    throw valueError(`${path}.prefix`, `${JSON.stringify(p)} is not a validated prefix`);
  }
}

export function checkNatBinding(binding: NatBinding, path = 'nat'): void {
  checkVipBinding({ app: binding?.app, prefix: binding?.vip }, path);
  const r = binding.rule;
  const parsed = parseNat(r?.text, `${path}.rule`);
  if (parsed.protocol !== r.protocol || parsed.listenPort !== r.listenPort || parsed.targetPort !== r.targetPort) {
    throw valueError(`${path}.rule`, `${JSON.stringify(r)} is not a validated NAT rule`);
  }
}
