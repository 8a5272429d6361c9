/** HostNetwork selection: in dry-run host changes are logged, not made (no root needed). */
import type { HostNetwork } from '../../plugin-api.js';
import type { VipcastConfig } from '../config-types.js';
import type { Logger } from '../logger.js';
import { LoggingHostNetwork } from './dry-run.js';
import { LinuxHostNetwork } from './linux.js';

export function createHostNetwork(config: VipcastConfig, dryRun: boolean, log: Logger): HostNetwork {
  if (dryRun) return new LoggingHostNetwork({ log });
  return new LinuxHostNetwork({ log, iptablesBinary: config.agent.iptablesBinary, localIp: () => config.bgp.localIp });
}
