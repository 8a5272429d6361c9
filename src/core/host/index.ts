/** HostNetwork selection: in dry-run host changes are logged, not made (no root needed). */
import type { HostNetwork } from '../../plugin-api.js';
import type { VipcastConfig } from '../config-types.js';
import type { Logger } from '../logger.js';
import { LoggingHostNetwork } from './dry-run.js';
import { LinuxHostNetwork } from './linux.js';

import type { LocalAddresses } from './nat-targets.js';
export type { LocalAddresses } from './nat-targets.js';

export function createHostNetwork(config: VipcastConfig, dryRun: boolean, log: Logger, local?: LocalAddresses): HostNetwork {
  const localIp = () => (config.bgp.localIp && !config.bgp.localIp.includes(':') ? config.bgp.localIp : local?.v4());
  const localIp6 = () => (config.bgp.localIp?.includes(':') ? config.bgp.localIp : local?.v6());
  if (dryRun) return new LoggingHostNetwork({ log, localIp, localIp6 });
  return new LinuxHostNetwork({ log, iptablesBinary: config.agent.iptablesBinary, localIp, localIp6, stateFile: config.agent.stateFile });
}
