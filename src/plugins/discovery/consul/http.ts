/** Consul discovery's HTTP: one GET through node:http(s) with a size limit, and the helpers around it. */
import http from 'node:http';
import https from 'node:https';

/** A catalog answer larger than this is an error (a node's services are kilobytes). */
const MAX_BODY_BYTES = 32 * 1024 * 1024;

export interface HttpAnswer {
  status: number;
  headers: http.IncomingHttpHeaders;
  text: string;
}

export function header(res: HttpAnswer, name: string): string | undefined {
  const v = res.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

/**
 * One GET through node:http(s), not fetch: fetch (undici) gives up after 300 s without response headers
 * (headersTimeout) and after 300 s without body data (bodyTimeout), and Consul answers a 5 min blocking read at up to
 * 5 min + wait/16, so nearly every idle read failed. node:http has neither limit and needs no dependency (Node does
 * not export undici's Agent, and an npm undici would have to match the bundled fetch); the caller's signal carries
 * the one deadline, derived from the wait (requestTimeoutMs).
 */
export function httpGet(url: string, headers: Record<string, string>, agent: http.Agent, signal: AbortSignal): Promise<HttpAnswer> {
  return new Promise((resolve, reject) => {
    const get = url.startsWith('https:') ? https.get : http.get;
    const req = get(url, { headers, agent, signal }, (res) => {
      const chunks: Buffer[] = [];
      let size = 0;
      let done = false;
      res.on('data', (chunk: Buffer) => {
        size += chunk.length;
        if (size > MAX_BODY_BYTES) req.destroy(new Error(`answer larger than ${MAX_BODY_BYTES} bytes`));
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

/** The first line of an answer's text, at most 200 characters (for error messages). */
export function oneLine(text: string): string {
  return text.trim().split('\n')[0]!.slice(0, 200);
}

/** Resolves after `ms`, or at once when `signal` aborts. */
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
