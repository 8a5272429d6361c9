/** agent.listen_addr in gocast's forms (":8080", "127.0.0.1:8080", "[::1]:8080"), shared by the API and the CLI. */
import { VipcastError } from './errors.js';

/** Split a TCP listen address; an empty host means every address ('::'). */
export function splitListen(listenAddr: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d{1,5})$/.exec(listenAddr);
  if (!m) throw new VipcastError('VIPCAST_ERR_VALUE', `agent.listen_addr: "${listenAddr}" is not [host]:port`);
  const host = m[1] ?? (m[2] === '' ? '::' : m[2]!);
  return { host, port: Number(m[3]) };
}
