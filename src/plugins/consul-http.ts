/**
 * vipcast's one Consul HTTP client, used by the Consul discovery (blocking catalog reads) and by the `consul`
 * monitor's check (in a check worker): a GET through node:http(s) with headers, an AbortSignal, a size limit and TLS
 * (CA, client certificate and key, server name), plus the query parameters every Consul request carries (`ns`,
 * `partition`, `stale`, `filter`) and the quoting of a filter's string.
 *
 * Not the `consul` npm package (consul@2.0.1 cannot send Consul Enterprise's `ns` parameter and puts no size limit on
 * an answer), not fetch: fetch (undici) gives up after 300 s without response headers (headersTimeout) and after
 * 300 s without body data (bodyTimeout), and Consul answers a 5 min blocking read at up to 5 min + wait/16, so nearly
 * every idle read failed; and fetch cannot present a client certificate without undici internals. node:http has
 * neither limit and needs no dependency; the caller's signal carries the one deadline.
 */
import { readFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import type { ConsulSettings, ConsulTlsSettings } from '../plugin-api.js';

export interface HttpAnswer {
  status: number;
  headers: http.IncomingHttpHeaders;
  text: string;
}

export function header(res: HttpAnswer, name: string): string | undefined {
  const v = res.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

/** One GET; the answer's body is limited to `maxBytes` (an error past it). `agent` must match the URL's scheme. */
export function consulGet(url: string, headers: Record<string, string>, agent: http.Agent, signal: AbortSignal, maxBytes: number): Promise<HttpAnswer> {
  return new Promise((resolve, reject) => {
    const get = url.startsWith('https:') ? https.get : http.get;
    const req = get(url, { headers, agent, signal }, (res) => {
      const chunks: Buffer[] = [];
      let size = 0;
      let done = false;
      res.on('data', (chunk: Buffer) => {
        size += chunk.length;
        if (size > maxBytes) req.destroy(new Error(`answer larger than ${maxBytes} bytes`));
        else chunks.push(chunk);
      });
      res.on('end', () => {
        done = true;
        resolve({ status: res.statusCode ?? 0, headers: res.headers, text: Buffer.concat(chunks).toString('utf8') });
      });
      res.on('error', reject);
      res.on('close', () => {
        if (!done) reject(new Error('the connection closed before the answer was complete'));
      });
    });
    req.on('error', reject);
  });
}

/** The request headers: JSON, and the token as X-Consul-Token when there is one (never logged). */
export function consulHeaders(consul: Pick<ConsulSettings, 'token'>): Record<string, string> {
  const headers: Record<string, string> = { accept: 'application/json' };
  if (consul.token) headers['X-Consul-Token'] = consul.token;
  return headers;
}

/**
 * `{addr}{path}` with the parameters every vipcast request sends: `ns` and `partition` when set (Consul Enterprise),
 * `stale` (valueless, as Consul's clients send it) when asked, then `extra` (index, wait, filter) URL-encoded.
 */
export function consulUrl(consul: Pick<ConsulSettings, 'addr' | 'namespace' | 'partition'>, path: string, extra: Record<string, string | undefined> = {}, stale = false): string {
  const q = new URLSearchParams();
  if (consul.namespace) q.set('ns', consul.namespace);
  if (consul.partition) q.set('partition', consul.partition);
  for (const [k, v] of Object.entries(extra)) if (v !== undefined) q.set(k, v);
  const parts = [q.toString(), stale ? 'stale' : ''].filter((s) => s !== '');
  return `${consul.addr}${path}${parts.length > 0 ? `?${parts.join('&')}` : ''}`;
}

/** A string literal of Consul's filter language (go-bexpr: double quotes, `\"` and `\\` escaped). */
export function bexprString(value: string): string {
  return `"${value.replace(/[\\"]/g, (c) => `\\${c}`)}"`;
}

/** The TLS options of an https.Agent from the settings' files (read now; errors name the file, never its content). */
export function tlsOptions(tls: ConsulTlsSettings | undefined): https.AgentOptions {
  if (!tls) return {};
  const read = (file: string, what: string): Buffer => {
    try {
      return readFileSync(file);
    } catch (err) {
      throw new Error(`cannot read the Consul TLS ${what} ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
  };
  return {
    ...(tls.caFile ? { ca: read(tls.caFile, 'CA file') } : {}),
    ...(tls.certFile ? { cert: read(tls.certFile, 'client certificate') } : {}),
    ...(tls.keyFile ? { key: read(tls.keyFile, 'client key') } : {}),
    ...(tls.serverName ? { servername: tls.serverName } : {}),
  };
}

/** A keep-alive agent for `addr`'s scheme (https: with the TLS settings' files, read now; may throw). */
export function consulAgent(consul: Pick<ConsulSettings, 'addr' | 'tls'>): http.Agent {
  return consul.addr.startsWith('https:') ? new https.Agent({ keepAlive: true, ...tlsOptions(consul.tls) }) : new http.Agent({ keepAlive: true });
}

/** The first line of an answer's text, at most 200 characters (for error messages). */
export function oneLine(text: string): string {
  return text.trim().split('\n')[0]!.slice(0, 200);
}

/**
 * What a failed connection says, for a log line or a check's reason: the error code and, for TLS, what was wrong
 * (certificate not trusted, name mismatch, handshake refused for want of a client certificate).
 */
export function connectError(err: unknown): string {
  const e = err as Error & { code?: string; cause?: { code?: string; message?: string }; reason?: string };
  const code = e.code ?? e.cause?.code;
  let msg = e.message ?? String(err);
  // OpenSSL's own text ("C0...:error:0A00045C:SSL routines:ssl3_read_bytes:tlsv13 alert certificate required:../deps/...")
  // shortened to its reason.
  const ssl = msg.match(/SSL routines:[^:]*:([^:]+)/);
  if (ssl) msg = ssl[1]!.trim();
  if (/certificate required/.test(msg)) msg += ': the server wants a client certificate (agent.consul_tls.cert_file / CONSUL_CLIENT_CERT)';
  const text = code && !msg.includes(code) ? `${code}: ${msg}` : msg;
  const tls = /CERT|SSL|TLS|SIGNATURE|SELF_SIGNED|ISSUER/i.test(`${code ?? ''} ${msg}`);
  return tls ? `${text} (TLS: check agent.consul_tls or CONSUL_CACERT, CONSUL_CLIENT_CERT, CONSUL_CLIENT_KEY, CONSUL_TLS_SERVER_NAME)` : text;
}

/** Resolves after `ms`, or at once when `signal` aborts (retry waits between reads). */
export function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = (): void => {
      clearTimeout(timer);
      resolve();
    };
    signal.addEventListener('abort', onAbort, { once: true });
  });
}
