/**
 * `port` monitor. String form `port:tcp:N` / `port:udp:N` keeps gocast's meaning: up while some socket on this host
 * listens on (TCP) or is bound to (UDP) port N on any local address. gocast found that by trying to bind the port;
 * vipcast reads the kernel's socket tables instead, so it never takes the port, not even for an instant.
 * Structured form `{ type: port, host, port, protocol: tcp }` makes a real TCP connect to host:port.
 */
import type { MonitorPlugin } from '../../../plugin-api.js';
import { PLUGIN_API_VERSION } from '../../../plugin-api.js';
import { valueError } from '../../../core/errors.js';
import { checkMonitorKeys, parseAddress, parsePort } from '../../../core/values.js';

export type PortParams =
  | { mode: 'listen'; protocol: 'tcp' | 'udp'; port: number }
  | { mode: 'connect'; protocol: 'tcp'; host: string; port: number };

const portMonitor: MonitorPlugin = {
  kind: 'monitor',
  name: 'port',
  version: '1.0.0',
  apiVersion: `^${PLUGIN_API_VERSION}`,
  workerModule: new URL('./check.js', import.meta.url).href,
  parse(input, ctx) {
    if (typeof input === 'string') {
      const parts = input.trim().toLowerCase().split(':');
      if (parts.length !== 2 || (parts[0] !== 'tcp' && parts[0] !== 'udp')) {
        throw valueError(ctx.path, `"port:${input}" is not a port monitor (want "port:tcp:N" or "port:udp:N")`);
      }
      const params: PortParams = { mode: 'listen', protocol: parts[0], port: parsePort(parts[1], ctx.path) };
      return { params, text: `${params.protocol}:${params.port}` };
    }
    checkMonitorKeys(input, ['host', 'port', 'protocol'], ctx.path, 'a port monitor');
    const protocol = input.protocol ?? 'tcp';
    if (protocol !== 'tcp') {
      throw valueError(`${ctx.path}.protocol`, `${JSON.stringify(protocol)}: a connect check is TCP only (for UDP use "port:udp:N")`);
    }
    const host = parseAddress(input.host, `${ctx.path}.host`).address;
    const port = parsePort(input.port, `${ctx.path}.port`);
    const params: PortParams = { mode: 'connect', protocol: 'tcp', host, port };
    return { params, text: `connect:${host.includes(':') ? `[${host}]` : host}:${port}` };
  },
};

export default portMonitor;
