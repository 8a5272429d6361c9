/**
 * The host commands (`ip`, `iptables`, `iptables-restore`, `conntrack`): spawned from an argument array, never a
 * shell, killed after COMMAND_TIMEOUT_MS, and a failure mapped to a coded error (binary missing, permission, other).
 */
import { spawn } from 'node:child_process';
import { basename } from 'node:path';
import { VipcastError } from '../errors.js';

/** A command is killed after this long (an iptables waiting for the xtables lock, a hung `ip`). */
const COMMAND_TIMEOUT_MS = 30_000;

/** Runs `cmd args` with `input` on stdin; resolves with its output on exit 0, rejects with a coded error otherwise. */
export type RunCommand = (cmd: string, args: readonly string[], input?: string) => Promise<{ stdout: string; stderr: string }>;

/** The runner for the host, or (tests) for every command run through `ip netns exec NS`. */
export function commandRunner(netns?: string): RunCommand {
  return (cmd, args, input) => {
    const [file, argv] = netns ? ['ip', ['netns', 'exec', netns, cmd, ...args]] : [cmd, [...args]];
    return new Promise((resolve, reject) => {
      const child = spawn(file, argv, { stdio: ['pipe', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      let timedOut = false;
      // Our own timer, not spawn's `timeout`: that one is never cleared when the spawn itself fails (ENOENT) and
      // would keep the process alive for its whole duration.
      const timer = setTimeout(() => {
        timedOut = true;
        child.kill('SIGKILL');
      }, COMMAND_TIMEOUT_MS);
      child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
      child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
      child.stdin.on('error', () => {}); // EPIPE when the command exits without reading: its exit status tells.
      child.stdin.end(input ?? '');
      child.on('error', (err) => {
        clearTimeout(timer);
        reject(commandError(file, cmd, args, stderr, err));
      });
      child.on('close', (code, signal) => {
        clearTimeout(timer);
        if (code === 0) return resolve({ stdout, stderr });
        const why = timedOut ? `no answer within ${COMMAND_TIMEOUT_MS} ms (xtables lock held?)` : signal ? `killed by ${signal}` : `exit ${code}`;
        reject(commandError(file, cmd, args, stderr ? `${stderr.trim()} (${why})` : why, new Error(`${cmd}: ${why}`)));
      });
    });
  };
}

const PACKAGE_OF: Record<string, string> = { ip: 'iproute2', conntrack: 'conntrack' };

function packageOf(bin: string): string {
  const base = basename(bin);
  return PACKAGE_OF[base] ?? (/^ip6?tables/.test(base) ? 'iptables' : 'unknown');
}

/**
 * Map a failed command to a coded error. `file` is what was spawned (`ip` when running through `ip netns exec`),
 * `cmd` + `args` what the user should see.
 */
function commandError(file: string, cmd: string, args: readonly string[], stderr: string, cause: unknown): VipcastError {
  const display = [cmd, ...args].join(' ');
  const missing = (cause as NodeJS.ErrnoException)?.code === 'ENOENT'
    ? file
    : /exec of "([^"]+)" failed: No such file or directory/.exec(stderr)?.[1];
  if (missing !== undefined) {
    return new VipcastError('VIPCAST_ERR_HOST_BINARY', `${missing} is not installed (Debian package: ${packageOf(missing)}); command: ${display}`, { cause });
  }
  if ((cause as NodeJS.ErrnoException)?.code === 'EACCES' || /Operation not permitted|Permission denied|you must be root/i.test(stderr)) {
    return new VipcastError('VIPCAST_ERR_HOST_PERMISSION', `${display}: permission denied (run as root or with CAP_NET_ADMIN): ${stderr.trim()}`, { cause });
  }
  return new VipcastError('VIPCAST_ERR_HOST', `${display} failed: ${stderr.trim() || String((cause as Error)?.message ?? cause)}`, { cause });
}
