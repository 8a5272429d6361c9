/**
 * The Consul test server as a process of its own, for lab tests whose vipcast runs inside a network namespace the
 * test process can't listen in: `ip netns exec NS node consul-server-main.js NODE SERVICES_JSON`. Prints
 * `{"addr": ...}` once it listens, serves NODE's services (a JSON array of TestService), and exits on SIGTERM.
 */
import { ConsulTestServer, type TestService } from './consul-server.js';

const [node = 'node1', services = '[]'] = process.argv.slice(2);
const server = new ConsulTestServer(node);
await server.start();
server.setServices(node, JSON.parse(services) as TestService[]);
process.stdout.write(`${JSON.stringify({ addr: server.addr })}\n`);
process.on('SIGTERM', () => void server.close().then(() => process.exit(0)));
