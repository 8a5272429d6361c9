/**
 * HTTP requests made by another local user (setpriv, no shell), optionally inside a lab namespace: the attacker of
 * issue 9 is an unprivileged user on the host. `node` (process.execPath) must be readable and executable by that user.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

const pexec = promisify(execFile);

export const NOBODY = { uid: 65534, gid: 65534 };

export interface HttpResult {
  status: number;
  headers: Record<string, string>;
  body: string;
}

// node:http rather than fetch: it also speaks to a unix socket. The token comes in through the environment (not argv).
const SCRIPT = `
const http = require('node:http');
const [, target, method, count] = process.argv;
const unix = target.startsWith('unix:');
const [sock, path] = unix ? target.slice(5).split('|') : [undefined, undefined];
const url = unix ? undefined : new URL(target);
const headers = process.env.VC_TOKEN ? { authorization: 'Bearer ' + process.env.VC_TOKEN } : {};
const one = () => new Promise((resolve) => {
  const req = http.request(unix ? { socketPath: sock, path, method, headers } : { host: url.hostname.replace(/^\\[|\\]$/g, ''), port: url.port, path: url.pathname + url.search, method, headers }, (res) => {
    let body = '';
    res.setEncoding('utf8');
    res.on('data', (d) => (body += d));
    res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body }));
  });
  req.on('error', (e) => resolve({ status: 0, headers: {}, body: e.code || String(e) }));
  req.end();
});
(async () => {
  const out = [];
  for (let i = 0; i < Number(count); i++) out.push(await one());
  process.stdout.write(JSON.stringify(out));
})();
`;

/**
 * `count` requests in a row as `user` (default nobody; 'root' = no setpriv), in namespace `ns` if given.
 * `target`: an http:// URL, or `unix:/path/to/sock|/register?...`.
 */
export async function requestsAs(target: string, opts: { method?: string; token?: string; ns?: string; user?: { uid: number; gid: number } | 'root'; count?: number } = {}): Promise<HttpResult[]> {
  const user = opts.user ?? NOBODY;
  const node = [process.execPath, '-e', SCRIPT, target, opts.method ?? 'GET', String(opts.count ?? 1)];
  const argv = user === 'root' ? node : ['setpriv', '--reuid', String(user.uid), '--regid', String(user.gid), '--clear-groups', ...node];
  const full = opts.ns ? ['ip', 'netns', 'exec', opts.ns, ...argv] : argv;
  const env: NodeJS.ProcessEnv = { PATH: process.env.PATH ?? '/usr/bin:/bin', ...(opts.token ? { VC_TOKEN: opts.token } : {}) };
  const { stdout } = await pexec(full[0]!, full.slice(1), { env, timeout: 30_000, maxBuffer: 16 * 1024 * 1024 });
  return JSON.parse(stdout) as HttpResult[];
}

export async function requestAs(target: string, opts: Parameters<typeof requestsAs>[1] = {}): Promise<HttpResult> {
  return (await requestsAs(target, { ...opts, count: 1 }))[0]!;
}
