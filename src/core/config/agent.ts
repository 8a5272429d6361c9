/** agent: the agent section's typed settings, flap damping's cross-key checks, the API token and Consul settings. */
import { readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { consulScheme, consulTls } from './consul.js';
import type { AgentConfig, FlapDampingConfig } from '../config-types.js';
import { Problems } from './problems.js';
import { DEFAULT_MAINTENANCE_STATE_FILE, DEFAULT_REGISTRATIONS_FILE, DEFAULT_STATE_FILE, DEFAULT_TIMEOUT_CAP_MS, formatMs } from './value-checks.js';
import type { Get } from './scalars.js';

export { consulSettings } from './consul.js';

export function buildAgent(get: Get, baseDir: string, problems: Problems, env: NodeJS.ProcessEnv): AgentConfig {
  const monitorIntervalMs = get<number>('agent.monitor_interval');
  const explicitTimeout = get<number | undefined>('agent.check_timeout');
  if (explicitTimeout !== undefined && monitorIntervalMs !== undefined && explicitTimeout > monitorIntervalMs) {
    problems.add('agent.check_timeout', `${formatMs(explicitTimeout)} is longer than agent.monitor_interval ${formatMs(monitorIntervalMs)}`);
  }
  const consulAddrText = get<string | undefined>('agent.consul_addr') ?? '';
  let consulAddr = consulAddrText;
  if (consulAddr && !consulAddr.endsWith('/v1')) {
    consulAddr += '/v1';
    problems.warnings.push(`agent.consul_addr: "${consulAddrText}" has no /v1; using "${consulAddr}"`);
  }
  consulAddr = consulAddr ? consulScheme(consulAddr, env, problems) : '';
  const tls = consulTls(get, baseDir, env, consulAddr, problems);
  const namespace = get<string | undefined>('agent.consul_namespace') ?? '';
  const partition = get<string | undefined>('agent.consul_partition') ?? '';
  const pid = get<string | undefined>('agent.pid_file') ?? '';
  const state = get<string | undefined>('agent.state_file') ?? '';
  // Unset: the persistent default, except for a dry run, which must not share (and overwrite) the file of a real
  // vipcast on the same host; an explicit path is used in a dry run too.
  const registrations = get<string | undefined>('agent.registrations_file');
  // As registrations_file: a dry run never shares the default with a real vipcast.
  const maintenanceState = get<string | undefined>('agent.maintenance_state_file');
  const maintenanceFile = get<string | undefined>('agent.maintenance_file') ?? '';
  const maintenanceDir = get<string | undefined>('agent.maintenance_dir') ?? '';
  const socketMode = get<number | undefined>('agent.api_socket_mode');
  if (socketMode !== undefined && (socketMode & 0o002) !== 0 && get<boolean | undefined>('agent.api_insecure_open') !== true) {
    problems.add('agent.api_socket_mode', `"${socketMode.toString(8).padStart(4, '0')}" lets every local user connect and register (other-writable): drop the o+w bit, or set agent.api_insecure_open: true`);
  }
  return Object.freeze({
    listenAddr: get<string>('agent.listen_addr'),
    monitorIntervalMs,
    cleanupTimerMs: get<number>('agent.cleanup_timer'),
    consulAddr,
    consulQueryIntervalMs: get<number>('agent.consul_query_interval'),
    consulToken: get<string>('agent.consul_token'),
    // Absent when unset, like consulTls: an agent without them reads as before.
    ...(namespace ? { consulNamespace: namespace } : {}),
    ...(partition ? { consulPartition: partition } : {}),
    ...(tls ? { consulTls: tls } : {}),
    rise: get<number>('agent.rise'),
    fall: get<number>('agent.fall'),
    checkTimeoutMs: explicitTimeout ?? Math.min(monitorIntervalMs ?? DEFAULT_TIMEOUT_CAP_MS, DEFAULT_TIMEOUT_CAP_MS),
    iptablesBinary: get<string>('agent.iptables_binary'),
    removeVipOnWithdraw: get<boolean>('agent.remove_vip_on_withdraw'),
    checkWorkers: get<number>('agent.check_workers'),
    pidFile: pid === '' ? '' : path.resolve(baseDir, pid),
    stateFile: state === '' ? DEFAULT_STATE_FILE : path.resolve(baseDir, state),
    registrationsFile: registrations === undefined
      ? (get<string>('routing.plugin') === 'dry-run' ? '' : DEFAULT_REGISTRATIONS_FILE)
      : registrations === '' ? '' : path.resolve(baseDir, registrations),
    maintenanceStateFile: maintenanceState === undefined
      ? (get<string>('routing.plugin') === 'dry-run' ? '' : DEFAULT_MAINTENANCE_STATE_FILE)
      : maintenanceState === '' ? '' : path.resolve(baseDir, maintenanceState),
    maintenanceFile: maintenanceFile === '' ? '' : path.resolve(baseDir, maintenanceFile),
    maintenanceDir: maintenanceDir === '' ? '' : path.resolve(baseDir, maintenanceDir),
    shutdownDrainMs: get<number>('agent.shutdown_drain'),
    apiToken: apiToken(get, baseDir, env, problems),
    apiAllowedUsers: Object.freeze(get<string[] | undefined>('agent.api_allowed_users') ?? []),
    apiAllowedGroups: Object.freeze(get<string[] | undefined>('agent.api_allowed_groups') ?? []),
    apiSocketMode: get<number>('agent.api_socket_mode'),
    apiSocketGroup: get<string | undefined>('agent.api_socket_group') ?? '',
    apiInsecureOpen: get<boolean>('agent.api_insecure_open'),
    flapDamping: flapDamping(get, problems),
  });
}

/**
 * agent.flap_damping, with the checks between its keys (made whether or not it is enabled, so a block switched on
 * later is already known to work): reuse below suppress, and a max_suppress long enough that the penalty cap
 * (reuse_threshold x 2^(max_suppress/half_life)) lies above suppress_threshold, or no app could ever be held down.
 */
function flapDamping(get: Get, problems: Problems): FlapDampingConfig {
  const k = (key: string) => `agent.flap_damping.${key}`;
  const fd: FlapDampingConfig = Object.freeze({
    enabled: get<boolean>(k('enabled')),
    penalty: get<number>(k('penalty')),
    suppressThreshold: get<number>(k('suppress_threshold')),
    reuseThreshold: get<number>(k('reuse_threshold')),
    halfLifeMs: get<number>(k('half_life')),
    maxSuppressMs: get<number>(k('max_suppress')),
  });
  const { suppressThreshold: suppress, reuseThreshold: reuse, halfLifeMs: half, maxSuppressMs: max } = fd;
  if (suppress === undefined || reuse === undefined) return fd;
  if (reuse >= suppress) {
    problems.add(k('reuse_threshold'), `${reuse} is not below ${k('suppress_threshold')} ${suppress} (an app is held down above suppress_threshold and announced again below reuse_threshold)`);
  } else if (half !== undefined && max !== undefined && reuse * 2 ** (max / half) <= suppress) {
    const least = Math.ceil(half * Math.log2(suppress / reuse) / 1000) * 1000 + 1000;
    problems.add(k('max_suppress'), `${formatMs(max)} is too short for half_life ${formatMs(half)}: the penalty is capped at reuse_threshold x 2^(max_suppress/half_life) = ${Math.round(reuse * 2 ** (max / half))}, not above suppress_threshold ${suppress}, so no app would ever be held down (at least ${formatMs(least)})`);
  }
  return fd;
}

/** RFC 6750's b64token, 16..4096 characters: what `Authorization: Bearer` can carry. */
const TOKEN = /^[A-Za-z0-9\-._~+/]{16,4096}=*$/;

/**
 * The API's bearer token from agent.api_token_file (a file no other user may read: mode o-rwx) or from the variable
 * agent.api_token_env names; '' for none. Read again on every reload, so a rotated token is picked up. No message
 * below may include the token.
 */
function apiToken(get: Get, baseDir: string, env: NodeJS.ProcessEnv, problems: Problems): string {
  const fileSetting = get<string | undefined>('agent.api_token_file') ?? '';
  const envName = get<string | undefined>('agent.api_token_env') ?? '';
  if (fileSetting !== '' && envName !== '') {
    problems.add('agent.api_token_file', 'set agent.api_token_file or agent.api_token_env, not both');
    return '';
  }
  const check = (value: string, path: string, what: string): string => {
    const token = value.replace(/\r?\n$/, '');
    if (!TOKEN.test(token)) {
      problems.add(path, `${what} is not a usable bearer token (16..4096 characters of A-Z a-z 0-9 - . _ ~ + / and trailing =; e.g. \`openssl rand -hex 32\`)`);
      return '';
    }
    return token;
  };
  if (envName !== '') {
    const value = env[envName];
    if (value === undefined || value === '') {
      problems.add('agent.api_token_env', `environment variable ${envName} is ${value === undefined ? 'not set' : 'empty'}`);
      return '';
    }
    return check(value, 'agent.api_token_env', `the value of ${envName}`);
  }
  if (fileSetting === '') return '';
  const file = path.resolve(baseDir, fileSetting);
  let text: string;
  try {
    const st = statSync(file);
    if (!st.isFile()) {
      problems.add('agent.api_token_file', `${file} is not a regular file`);
      return '';
    }
    if ((st.mode & 0o007) !== 0) {
      problems.add('agent.api_token_file', `${file} is open to every user (mode ${(st.mode & 0o777).toString(8).padStart(4, '0')}): chmod o-rwx ${file} (0600 or 0640)`);
      return '';
    }
    text = readFileSync(file, 'utf8');
  } catch (err) {
    problems.add('agent.api_token_file', `cannot read ${file} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
    return '';
  }
  return check(text, 'agent.api_token_file', `the content of ${file}`);
}
