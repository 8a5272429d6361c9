/**
 * The agent's Consul settings beyond consul_addr / consul_token: Enterprise namespace and partition, TLS
 * (agent.consul_tls or Consul's own CONSUL_CACERT, CONSUL_CLIENT_CERT, CONSUL_CLIENT_KEY, CONSUL_TLS_SERVER_NAME,
 * CONSUL_HTTP_SSL), and the ConsulSettings the discovery and the `consul` monitor get.
 */
import { createHash, X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import tls from 'node:tls';
import type { ConsulSettings, ConsulTlsSettings } from '../../plugin-api.js';
import type { AgentConfig } from '../config-types.js';
import { valueError } from '../errors.js';
import { describe } from './value-checks.js';
import type { Get, Problems } from './problems.js';

/** The agent's Consul settings: consul_addr / consul_token (CONSUL_TOKEN already applied), namespace, partition, TLS, and CONSUL_NODE / CONSUL_STALE. */
export function consulSettings(agent: Pick<AgentConfig, 'consulAddr' | 'consulToken'> & Partial<Pick<AgentConfig, 'consulNamespace' | 'consulPartition' | 'consulTls'>>, env: NodeJS.ProcessEnv): ConsulSettings {
  return Object.freeze({
    addr: agent.consulAddr ?? '',
    token: agent.consulToken ?? '',
    node: env.CONSUL_NODE ?? '',
    stale: (env.CONSUL_STALE ?? '').toLowerCase() === 'true',
    ...(agent.consulNamespace ? { namespace: agent.consulNamespace } : {}),
    ...(agent.consulPartition ? { partition: agent.consulPartition } : {}),
    ...(agent.consulTls ? { tls: agent.consulTls } : {}),
  });
}

/** A Consul namespace or partition name ('' = none): letters, digits, `-` and `_`, at most 64 (Consul's own rule is stricter). */
export function consulName(value: unknown, keyPath: string): string {
  if (typeof value !== 'string' || !/^([A-Za-z0-9][A-Za-z0-9_-]{0,63})?$/.test(value.trim())) {
    throw valueError(keyPath, `${describe(value)} is not a Consul namespace or partition name (letters, digits, - and _, at most 64)`);
  }
  return value.trim();
}

/** A TLS server name: a DNS name or an address, no spaces ('' = the host of consul_addr). */
export function serverName(value: unknown, keyPath: string): string {
  if (typeof value !== 'string' || !/^[A-Za-z0-9.:_-]{0,253}$/.test(value.trim())) throw valueError(keyPath, `${describe(value)} is not a host name`);
  return value.trim();
}

/** Go's strconv.ParseBool, as Consul reads CONSUL_HTTP_SSL; undefined for anything else. */
function parseBool(text: string): boolean | undefined {
  if (['1', 't', 'T', 'TRUE', 'true', 'True'].includes(text)) return true;
  if (['0', 'f', 'F', 'FALSE', 'false', 'False'].includes(text)) return false;
  return undefined;
}

/**
 * CONSUL_HTTP_SSL=true turns an `http://` consul_addr into `https://` (as Consul's own client: TLS explicitly asked
 * for is never reverted to plain HTTP); false changes nothing (an https:// address stays https).
 */
export function consulScheme(addr: string, env: NodeJS.ProcessEnv, problems: Problems): string {
  const raw = env.CONSUL_HTTP_SSL ?? '';
  if (raw === '') return addr;
  const on = parseBool(raw);
  if (on === undefined) {
    problems.add('CONSUL_HTTP_SSL', `${JSON.stringify(raw)} is not true or false`);
    return addr;
  }
  if (on && addr.startsWith('http://')) {
    const https = `https://${addr.slice('http://'.length)}`;
    problems.warnings.push(`agent.consul_addr: CONSUL_HTTP_SSL=${raw}: using "${https}" for "${addr}"`);
    return https;
  }
  return addr;
}

const TLS_KEYS = [
  ['caFile', 'ca_file', 'CONSUL_CACERT', 'CA file'],
  ['certFile', 'cert_file', 'CONSUL_CLIENT_CERT', 'client certificate'],
  ['keyFile', 'key_file', 'CONSUL_CLIENT_KEY', 'client key'],
] as const;

/**
 * agent.consul_tls, each key overridden by its Consul variable when that is set and non-empty. A file from the config
 * is taken from the config file's folder, one from the environment from the working folder (as Consul's CLI). The
 * files are read and checked now (a CA that parses; a certificate with its matching key; neither without the
 * other); errors name the key path or the variable, never a file's content. Undefined when nothing is set.
 */
export function consulTls(get: Get, baseDir: string, env: NodeJS.ProcessEnv, addr: string, problems: Problems): ConsulTlsSettings | undefined {
  const files: Record<string, { file: string; key: string; data?: Buffer }> = {};
  for (const [field, key, envName] of TLS_KEYS) {
    // The schema already applied the variable (when set and non-empty): it only decides the base folder and the name.
    const fromEnv = env[envName] ?? '';
    const value = get<string | undefined>(`agent.consul_tls.${key}`) ?? '';
    const shown = fromEnv !== '' ? `agent.consul_tls.${key} (from $${envName})` : `agent.consul_tls.${key}`;
    const file = value === '' ? '' : fromEnv !== '' ? path.resolve(value) : path.resolve(baseDir, value);
    files[field] = { file, key: shown };
    if (file === '') continue;
    try {
      files[field]!.data = readFileSync(file);
    } catch (err) {
      problems.add(shown, `cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
  }
  const name = get<string | undefined>('agent.consul_tls.server_name') ?? '';
  const { caFile: ca, certFile: cert, keyFile: key } = files as Record<'caFile' | 'certFile' | 'keyFile', { file: string; key: string; data?: Buffer }>;
  if (ca.file === '' && cert.file === '' && key.file === '' && name === '') return undefined;
  const before = problems.list.length;
  if ((cert.file === '') !== (key.file === '')) {
    const [set, unset] = cert.file === '' ? [key, cert] : [cert, key];
    problems.add(unset.key, `is not set, but ${set.key} is: a client certificate needs its key (set both or neither)`);
  }
  const secure = (what: { key: string; file: string }, opts: tls.SecureContextOptions, hint: string): void => {
    try {
      tls.createSecureContext(opts);
    } catch (err) {
      problems.add(what.key, `${what.file} ${hint}: ${(err as Error).message}`);
    }
  };
  if (ca.data) {
    // createSecureContext takes a file without any certificate silently: parse the first one.
    try {
      new X509Certificate(ca.data);
      secure(ca, { ca: ca.data }, 'is not a usable PEM CA certificate');
    } catch (err) {
      problems.add(ca.key, `${ca.file} is not a usable PEM CA certificate: ${(err as Error).message}`);
    }
  }
  if (cert.data && key.data) secure(key, { cert: cert.data, key: key.data }, `is not the PEM key of ${cert.key} ${cert.file}`);
  if (problems.list.length > before) return undefined;
  if (addr.startsWith('http://')) problems.warnings.push('agent.consul_tls: set, but agent.consul_addr is http:// (not used; write https:// or set CONSUL_HTTP_SSL=true)');
  const h = createHash('sha256');
  for (const f of [ca, cert, key]) h.update(f.file).update('\0').update(f.data ?? '').update('\0');
  h.update(name);
  return Object.freeze({ caFile: ca.file, certFile: cert.file, keyFile: key.file, serverName: name, fingerprint: h.digest('hex') });
}
