/**
 * `http` monitor: `http:URL` or `{ type: http, url, expect_status }`; up when a GET answers with an expected status
 * (default 200..399) within the timeout.
 */
import type { MonitorPlugin } from '../../../plugin-api.js';
import { PLUGIN_API_VERSION } from '../../../plugin-api.js';
import { valueError } from '../../../core/errors.js';
import { checkMonitorKeys } from '../../../core/values.js';

export interface HttpParams {
  url: string;
  /** Accepted status codes; empty = 200..399. */
  expectStatus: number[];
}

const httpMonitor: MonitorPlugin = {
  kind: 'monitor',
  name: 'http',
  version: '1.0.0',
  apiVersion: `^${PLUGIN_API_VERSION}`,
  workerModule: new URL('./check.js', import.meta.url).href,
  parse(input, ctx) {
    const obj = typeof input === 'string' ? { url: input } : input;
    checkMonitorKeys(obj, ['url', 'expect_status'], ctx.path, 'an http monitor');
    let url: URL;
    try {
      url = new URL(String(obj.url));
    } catch {
      throw valueError(ctx.path, `${JSON.stringify(obj.url)} is not a URL (want "http:http://127.0.0.1:8080/health")`);
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') throw valueError(ctx.path, `"${url.href}" must be an http or https URL`);
    const raw = obj.expect_status === undefined ? [] : Array.isArray(obj.expect_status) ? obj.expect_status : [obj.expect_status];
    const expectStatus = raw.map((s, i) => {
      if (!Number.isInteger(s) || (s as number) < 100 || (s as number) > 599) throw valueError(`${ctx.path}.expect_status[${i}]`, `${JSON.stringify(s)} is not an HTTP status`);
      return s as number;
    });
    const params: HttpParams = { url: url.href, expectStatus };
    return { params, text: url.href + (expectStatus.length ? ` ${expectStatus.join(',')}` : '') };
  },
};

export default httpMonitor;
