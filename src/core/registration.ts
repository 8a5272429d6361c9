/**
 * Apps registered at run time (gocast's HTTP /register; Consul tags use the same builder): untrusted input, so
 * every field is validated here, every VIP and community passes the prefix policy (prefix-policy.ts, with
 * agent.registration_allowed_prefixes on top of the config file's rules) and monitors that run commands are refused.
 */
import type { AppSource, AppSpec, Community, ConsulSettings, MonitorSpec, NatRule, Prefix } from '../plugin-api.js';
import type { AgentConfig } from './config-types.js';
import type { MonitorRegistry } from './monitor-registry.js';
import { VipcastError } from './errors.js';
import { parseAppName, parseCommunity, parseNat, parsePrefix } from './values.js';
import { DEFAULT_POLICY, checkCommunity, checkVip, vipRefusal } from './prefix-policy.js';
import { readHostAddresses } from './host-addresses.js';

export interface RegistrationInput {
  name?: unknown;
  vip?: unknown;
  monitor?: unknown;
  nat?: unknown;
  vip_communities?: unknown;
}

function list(v: unknown): unknown[] {
  if (v === undefined) return [];
  return Array.isArray(v) ? v : [v];
}

/**
 * Build an AppSpec from registration parameters; throws VIPCAST_ERR_REGISTRATION naming the parameter.
 * `consul` (the agent's Consul settings) lets a `consul` monitor be registered; without it that monitor is refused.
 */
export function appFromRegistration(input: RegistrationInput, source: AppSource, agent: AgentConfig, monitors: MonitorRegistry, consul?: ConsulSettings): AppSpec {
  const problems: string[] = [];
  const attempt = <T>(fn: () => T): T | undefined => {
    try {
      return fn();
    } catch (err) {
      problems.push((err as Error).message);
      return undefined;
    }
  };
  if (input.name === undefined || input.name === '') problems.push('name: missing (the app name)');
  const name = input.name === undefined || input.name === '' ? undefined : attempt(() => parseAppName(single(input.name, 'name'), 'name'));
  // gocast takes one vip; several may be given by repeating the parameter or with commas.
  const vipTexts = list(input.vip).flatMap((v) => String(v).split(',')).map((s) => s.trim()).filter((s) => s !== '');
  if (vipTexts.length === 0) problems.push('vip: missing (a prefix such as 198.18.0.10/32)');
  // The prefix policy (invariant 9): the same rules as the config file's apps, plus the registration allowlist.
  const policy = agent.prefixPolicy ?? DEFAULT_POLICY;
  const host = readHostAddresses();
  const vips = vipTexts.map((v, i) => attempt(() => {
    const path = vipTexts.length > 1 ? `vip[${i}]` : 'vip';
    const prefix = parsePrefix(v, path);
    const refused = checkVip(prefix, policy, { source, host });
    if (refused) throw new VipcastError('VIPCAST_ERR_PREFIX_POLICY', vipRefusal(path, prefix, refused));
    return prefix;
  })).filter((v): v is Prefix => v !== undefined);
  const commTexts = list(input.vip_communities).flatMap((v) => String(v).split(',')).map((s) => s.trim()).filter((s) => s !== '');
  const communities = commTexts.map((c, i) => attempt(() => {
    const community = parseCommunity(c, `vip_communities[${i}]`);
    const refused = checkCommunity(community, policy);
    if (refused) throw new VipcastError('VIPCAST_ERR_PREFIX_POLICY', `vip_communities[${i}]: ${refused}`);
    return community;
  })).filter((c): c is Community => c !== undefined);
  const monitorSpecs = list(input.monitor).map((m, i) =>
    attempt(() => monitors.parse(String(m), { path: `monitor[${i}]`, baseDir: process.cwd(), trusted: false, ...(typeof input.name === 'string' ? { app: input.name } : {}), ...(consul ? { consul } : {}) })),
  ).filter((m): m is MonitorSpec => m !== undefined);
  const nats = list(input.nat).map((n, i) => attempt(() => parseNat(String(n), `nat[${i}]`))).filter((n): n is NatRule => n !== undefined);
  const dup = vips.find((v, i) => vips.findIndex((w) => w.text === v.text) !== i);
  if (dup) problems.push(`vip: ${dup.text} is given twice`);
  if (problems.length > 0 || name === undefined) {
    throw new VipcastError('VIPCAST_ERR_REGISTRATION', problems.join('; '), { details: problems });
  }
  return Object.freeze({
    name, source, vips, communities, monitors: monitorSpecs, nats,
    rise: agent.rise, fall: agent.fall, intervalMs: agent.monitorIntervalMs, timeoutMs: agent.checkTimeoutMs,
  });
}

function single(v: unknown, param: string): string {
  if (Array.isArray(v)) {
    if (v.length !== 1) throw new VipcastError('VIPCAST_ERR_REGISTRATION', `${param}: given ${v.length} times`);
    return String(v[0]);
  }
  return String(v);
}
