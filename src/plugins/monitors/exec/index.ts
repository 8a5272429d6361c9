/**
 * `exec` monitor: `exec:CMD` runs CMD with `bash -c` (as gocast does); exit 0 = up. At the timeout the whole process
 * group is killed, and with it the check's cgroup (what the command detached with setsid; see core/check-cgroups.ts).
 * The last lines of output become the reason. Only accepted from trusted sources (the config file).
 */
import type { MonitorPlugin } from '../../../plugin-api.js';
import { PLUGIN_API_VERSION } from '../../../plugin-api.js';
import { valueError } from '../../../core/errors.js';
import { checkMonitorKeys } from '../../../core/values.js';

export interface ExecParams {
  command: string;
}

const execMonitor: MonitorPlugin = {
  kind: 'monitor',
  name: 'exec',
  version: '1.0.0',
  apiVersion: `^${PLUGIN_API_VERSION}`,
  runsCommands: true,
  workerModule: new URL('./check.js', import.meta.url).href,
  parse(input, ctx) {
    const command = typeof input === 'string' ? input : input.command;
    if (typeof input === 'object') checkMonitorKeys(input, ['command'], ctx.path, 'an exec monitor');
    if (typeof command !== 'string' || command.trim() === '') throw valueError(ctx.path, 'an exec monitor needs a command ("exec:CMD")');
    if (command.includes('\0')) throw valueError(ctx.path, 'the exec command contains a NUL byte');
    const params: ExecParams = { command };
    return { params, text: command };
  },
};

export default execMonitor;
