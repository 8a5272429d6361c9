/**
 * Command line: `vipcast run|validate|check|reload|status|maintenance ...`, plus gocast's `-config FILE` form.
 * Exit codes: 0 ok, 1 runtime failure, 2 invalid config or usage.
 *
 * Signals (run): SIGHUP is caught from the process's first statement (bin/vipcast.js, early-signals.ts); one that
 * arrives before the daemon runs is answered by one reload once it does. SIGTERM/SIGINT during start let the start
 * finish, then stop as usual (withdrawing what it announced); before run installs its handlers nothing has been done
 * and the default action ends the process.
 */
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { errorDetails, VipcastError } from './core/errors.js';
import { releaseEarlySignals, takeEarlySignals } from './early-signals.js';
import { HELP } from './cli-help.js';

// Everything heavy is imported by the command that needs it: --version and --help load nothing more than this
// file (and cli-help.ts), validate and reload load the config parser (no fastify, gRPC, piscina or pino), check loads the config parser
// and the check pool (piscina; no router, host network or API), only run loads the daemon.

/** A signal during start waits at most this long for the speaker and host network to be started before stopping. */
const STOP_WAITS_FOR_START_MS = 3000;

interface Args {
  command: 'run' | 'validate' | 'check' | 'reload' | 'status' | 'maintenance' | 'help' | 'version';
  config?: string;
  dryRun: boolean;
  logLevel: string;
  pidFile?: string;
  api?: string;
  json?: boolean;
  /** maintenance: APP and on|off (or only on|off with --all; none to list). check: APP, or none for every app. */
  positional: string[];
  all?: boolean;
}

export function parseArgs(argv: readonly string[]): Args {
  const args: Args = { command: 'run', dryRun: false, logLevel: 'info', positional: [] };
  let i = 0;
  const first = argv[0];
  if (first === 'run' || first === 'validate' || first === 'check' || first === 'reload' || first === 'status' || first === 'maintenance') {
    args.command = first;
    i = 1;
  } else if (first === 'help') {
    args.command = 'help';
    return args;
  }
  const value = (flag: string): string => {
    const v = argv[++i];
    if (v === undefined || v.startsWith('-')) throw new VipcastError('VIPCAST_ERR_USAGE', `${flag} needs a value`);
    return v;
  };
  for (; i < argv.length; i++) {
    const a = argv[i]!;
    const eq = a.indexOf('=');
    const flag = a.startsWith('--') && eq > 0 ? a.slice(0, eq) : a;
    const inline = a.startsWith('--') && eq > 0 ? a.slice(eq + 1) : undefined;
    const take = (): string => inline ?? value(flag);
    switch (flag) {
      case '-c': case '--config': case '-config': case '--config-file': args.config = take(); break;
      case '--dry-run': args.dryRun = true; break;
      case '--log-level': case '-log-level': args.logLevel = take(); break;
      case '--pid-file': args.pidFile = take(); break;
      case '--api': args.api = take(); break;
      case '--json': args.json = true; break;
      case '--all': args.all = true; break;
      case '-h': case '--help': case '-help': args.command = 'help'; return args;
      case '--version': case '-version': args.command = 'version'; return args;
      // glog flags gocast users pass: accepted and ignored.
      case '-logtostderr': case '--logtostderr': case '-alsologtostderr': break;
      default:
        if ((args.command === 'maintenance' || args.command === 'check') && !a.startsWith('-')) {
          args.positional.push(a);
          break;
        }
        if (/^--?v=\d+$/.test(a)) break;
        throw new VipcastError('VIPCAST_ERR_USAGE', `unknown argument "${a}" (see vipcast --help)`);
    }
  }
  if (!['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'].includes(args.logLevel)) {
    throw new VipcastError('VIPCAST_ERR_USAGE', `--log-level: "${args.logLevel}" is not one of trace, debug, info, warn, error`);
  }
  if (args.command === 'maintenance') maintenanceUsage(args);
  if (args.command === 'check' && args.positional.length > 1) {
    throw new VipcastError('VIPCAST_ERR_USAGE', `check takes at most one app name, not "${args.positional.join(' ')}" (usage: vipcast check -c FILE [APP])`);
  }
  if ((args.command === 'run' || args.command === 'validate' || args.command === 'check') && !args.config) {
    throw new VipcastError('VIPCAST_ERR_USAGE', `${args.command} needs a config file: -c FILE`);
  }
  return args;
}

/** `maintenance APP on|off`, `maintenance --all on|off` or `maintenance` (list); anything else is a usage error. */
function maintenanceUsage(args: Args): void {
  const p = args.positional;
  const state = p[p.length - 1];
  const usage = 'usage: vipcast maintenance APP on|off, vipcast maintenance --all on|off, or vipcast maintenance (list)';
  if (args.all) {
    if (p.length !== 1 || (state !== 'on' && state !== 'off')) throw new VipcastError('VIPCAST_ERR_USAGE', `maintenance --all needs on or off (${usage})`);
  } else if (p.length === 1) {
    throw new VipcastError('VIPCAST_ERR_USAGE', `maintenance ${p[0]}: on or off is missing (${usage})`);
  } else if (p.length > 2 || (p.length === 2 && state !== 'on' && state !== 'off')) {
    throw new VipcastError('VIPCAST_ERR_USAGE', `maintenance: "${p.join(' ')}" is not APP on|off (${usage})`);
  }
}

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

export async function main(argv: readonly string[]): Promise<void> {
  let args: Args;
  try {
    args = parseArgs(argv);
  } catch (err) {
    process.stderr.write(`vipcast: ${(err as Error).message}\n`);
    process.exitCode = 2;
    return;
  }
  if (args.command !== 'run') releaseEarlySignals();
  if (args.command === 'help') return void process.stdout.write(HELP + '\n');
  if (args.command === 'version') return void process.stdout.write(version() + '\n');
  if (args.command === 'validate') return validate(args.config!);
  if (args.command === 'check') return check(args);
  if (args.command === 'reload') return reload(args);
  if (args.command === 'status') return status(args);
  if (args.command === 'maintenance') return maintenance(args);
  return run(args);
}

/**
 * The daemon's API address (--api, else agent.listen_addr of -c FILE) and, from -c FILE, its bearer token; undefined
 * (exit code 2 set, the problem printed) when there is none.
 */
async function apiOf(args: Args, command: string, wantToken: boolean): Promise<{ listenAddr: string; token: string } | undefined> {
  let listenAddr = args.api;
  let token = '';
  if (listenAddr === undefined && !args.config) {
    process.stderr.write(`vipcast ${command}: pass --api ADDR or -c FILE (its agent.listen_addr)\n`);
    process.exitCode = 2;
    return undefined;
  }
  if (args.config && (listenAddr === undefined || wantToken)) {
    const { loadConfig } = await import('./core/config.js');
    try {
      const agent = (await loadConfig(resolve(args.config), { env: process.env })).agent;
      listenAddr ??= agent.listenAddr;
      token = agent.apiToken;
    } catch (err) {
      printConfigError(args.config, err);
      process.exitCode = 2;
      return undefined;
    }
    if (listenAddr === '') {
      process.stderr.write(`vipcast ${command}: ${args.config} has no API (agent.listen_addr is empty)\n`);
      process.exitCode = 2;
      return undefined;
    }
  }
  return { listenAddr: listenAddr!, token };
}

async function status(args: Args): Promise<void> {
  const api = await apiOf(args, 'status', false);
  if (!api) return;
  const { listenAddr } = api;
  const { fetchStatus, formatStatus } = await import('./status-command.js');
  try {
    const { body, status: s } = await fetchStatus(listenAddr);
    process.stdout.write(args.json ? `${body}\n` : `${formatStatus(s)}\n`);
  } catch (err) {
    process.stderr.write(`vipcast status: ${(err as Error).message}\n`);
    process.exitCode = 1;
  }
}

async function maintenance(args: Args): Promise<void> {
  const api = await apiOf(args, 'maintenance', true);
  if (!api) return;
  const { apiRequest, formatMaintenance, formatMaintenanceChange } = await import('./status-command.js');
  const p = args.positional;
  const change = p.length > 0;
  const path = change ? `/maintenance?${new URLSearchParams({ app: args.all ? '*' : p[0]!, state: p[p.length - 1]!, by: 'cli' }).toString()}` : '/maintenance';
  try {
    const res = await apiRequest(api.listenAddr, change ? 'POST' : 'GET', path, api.token);
    let body: Record<string, unknown> | undefined;
    try {
      body = JSON.parse(res.body) as Record<string, unknown>;
    } catch {
      body = undefined;
    }
    if (res.code !== 200 || !body) {
      const why = typeof body?.error === 'string' ? body.error : res.body.trim().slice(0, 300);
      process.stderr.write(`vipcast maintenance: the daemon answered ${res.code}: ${why}\n`);
      process.exitCode = res.code === 400 ? 2 : 1;
      return;
    }
    if (args.json) process.stdout.write(`${res.body}\n`);
    else process.stdout.write(`${change ? formatMaintenanceChange(body as never) : formatMaintenance(body as never)}\n`);
  } catch (err) {
    process.stderr.write(`vipcast maintenance: ${(err as Error).message}\n`);
    process.exitCode = 1;
  }
}

async function validate(file: string): Promise<void> {
  try {
    const { loadConfig } = await import('./core/config.js');
    const config = await loadConfig(resolve(file), { env: process.env });
    const vips = config.apps.reduce((n, a) => n + a.vips.length, 0);
    for (const w of config.warnings ?? []) process.stderr.write(`${file}: warning: ${w}\n`);
    // NAT that can't work on this host (no local address of the VIP's family to DNAT to): a warning, as validate may
    // run elsewhere than on the target host.
    const { natWarnings } = await import('./core/host/nat-targets.js');
    for (const w of await natWarnings(config)) process.stderr.write(`${file}: warning: ${w}\n`);
    process.stdout.write(`${file}: OK: ${config.apps.length} apps, ${vips} VIPs, ${config.bgp.peers.length} peers, routing ${config.routing.plugin}${config.routing.plugin === 'gobgp' ? (config.routing.gobgp.managed ? ` (managed gobgpd in ${config.routing.gobgp.socketDir})` : ` at ${config.routing.gobgp.address}`) : ''}${config.plugins.length ? `, plugins ${config.plugins.join(' ')}` : ''}\n`);
  } catch (err) {
    printConfigError(file, err);
    process.exitCode = 2;
  }
}

/**
 * `vipcast check`: load the config as validate does, run each monitor once (check-command.ts), print the table (or
 * JSON). Exit 0 when every check is up, 1 when one is down, 2 for an invalid config or an app it does not have.
 */
async function check(args: Args): Promise<void> {
  const file = args.config!;
  const { loadConfig } = await import('./core/config.js');
  let config: Awaited<ReturnType<typeof loadConfig>>;
  try {
    config = await loadConfig(resolve(file), { env: process.env });
  } catch (err) {
    printConfigError(file, err);
    process.exitCode = 2;
    return;
  }
  for (const w of config.warnings ?? []) process.stderr.write(`${file}: warning: ${w}\n`);
  const { selectApps, runChecks, formatReport, reportJson } = await import('./core/check-command.js');
  const app = args.positional[0];
  const apps = selectApps(config, app);
  if (apps === undefined) {
    process.stderr.write(`vipcast check: ${file} has no app "${app}" (apps: ${config.apps.map((a) => a.name).join(', ') || 'none'})\n`);
    process.exitCode = 2;
    return;
  }
  const report = await runChecks(config, apps);
  process.stdout.write(`${args.json ? reportJson(report) : formatReport(report)}\n`);
  process.exitCode = report.down > 0 ? 1 : 0;
}

function printConfigError(file: string, err: unknown): void {
  const details = errorDetails(err);
  if (err instanceof VipcastError && err.details.length > 0) {
    process.stderr.write(`${file}: ${details.length} problem${details.length === 1 ? '' : 's'}:\n`);
    for (const d of details) process.stderr.write(`  ${d}\n`);
  } else {
    process.stderr.write(`${file}: ${details[0]}\n`);
  }
}

async function reload(args: Args): Promise<void> {
  let pidFile = args.pidFile;
  if (!pidFile && args.config) {
    const { loadConfig } = await import('./core/config.js');
    const config = await loadConfig(resolve(args.config), { env: process.env }).catch(() => undefined);
    pidFile = config?.agent.pidFile || undefined;
  }
  if (!pidFile) {
    process.stderr.write('vipcast reload: no pid file: pass --pid-file FILE or -c FILE with agent.pid_file set\n');
    process.exitCode = 2;
    return;
  }
  let pid: number;
  try {
    pid = Number(readFileSync(pidFile, 'utf8').trim());
    if (!Number.isInteger(pid) || pid <= 1) throw new Error(`"${pidFile}" does not hold a pid`);
    // A stale file (the daemon was killed) whose pid now belongs to another process: SIGHUP would end that one.
    const cmdline = readProcCmdline(pid);
    if (cmdline !== undefined && !cmdline.includes('vipcast')) throw new Error(`pid ${pid} in "${pidFile}" is not vipcast (a stale pid file?)`);
    process.kill(pid, 'SIGHUP');
  } catch (err) {
    process.stderr.write(`vipcast reload: ${(err as Error).message}\n`);
    process.exitCode = 1;
    return;
  }
  process.stdout.write(`sent SIGHUP to vipcast (pid ${pid})\n`);
}

/** The command line of `pid` (Linux /proc), or undefined where it can't be read. */
function readProcCmdline(pid: number): string | undefined {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ');
  } catch {
    return undefined;
  }
}

async function run(args: Args): Promise<void> {
  const [{ createLogger }, { Daemon }] = await Promise.all([import('./core/logger.js'), import('./core/daemon.js')]);
  const log = createLogger({ level: args.logLevel });
  const daemon = new Daemon({ configFile: resolve(args.config!), dryRun: args.dryRun, log });
  let running = false;
  let starting: Promise<void> | undefined;
  let signals = 0;
  const shutdown = (signal: string, exitCode = 0) => {
    signals++;
    if (signals > 1) {
      log.warn({ signal }, 'second signal: exiting now');
      process.exit(1);
    }
    log.info({ signal }, 'shutting down');
    // The stop's deadline counts from here, the wait for a start included.
    const signalAt = performance.now();
    const force = setTimeout(() => {
      log.error('shutdown took over 10 s: exiting');
      process.exit(1);
    }, 10_000);
    force.unref();
    void (async () => {
      // Stopping in the middle of start() would race it (it goes on announcing after the withdraw): let it finish,
      // then withdraw everything it did. A start that fails stops and exits by itself.
      // A start stuck on a frozen speaker (its first pass waits on a gRPC deadline) is not waited for: once the
      // speaker and host network are started, or after STOP_WAITS_FOR_START_MS, the stop halts it at its next step.
      if (!running && starting) {
        log.info({ signal }, 'vipcast is still starting: stopping once its speaker and host network are started');
        let timer: NodeJS.Timeout | undefined;
        await Promise.race([daemon.stoppable, starting.catch(() => undefined), new Promise((r) => { timer = setTimeout(r, STOP_WAITS_FOR_START_MS); })]);
        clearTimeout(timer);
      }
      await daemon.stop(signal, signalAt);
      daemon.pidFile.remove();
      process.exit(exitCode);
    })();
  };
  // A bug that leaves a promise rejected must not end the daemon (Node's default would, keeping no promise about
  // routes); an exception thrown out of a callback leaves unknown state: stop cleanly, withdrawing, and exit 1.
  process.on('unhandledRejection', (reason) => {
    log.error({ code: 'VIPCAST_ERR_INTERNAL', err: reason }, 'unhandled promise rejection (a bug): logged, vipcast goes on');
  });
  process.on('uncaughtException', (err) => {
    log.fatal({ code: 'VIPCAST_ERR_INTERNAL', err }, 'uncaught exception (a bug): stopping, withdrawing every route');
    shutdown('uncaughtException', 1);
  });
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
  process.on('SIGHUP', () => void daemon.requestReload('SIGHUP'));
  // Only now, with the handler above in place, the early one goes: no moment with SIGHUP's default action.
  const early = takeEarlySignals();
  if (early.length > 0) {
    log.info({ signals: early.length, at_ms: early }, 'SIGHUP while vipcast was loading: one reload once the daemon runs');
    void daemon.requestReload('SIGHUP');
  }
  starting = daemon.start();
  try {
    await starting;
  } catch (err) {
    if (err instanceof VipcastError && (err.code === 'VIPCAST_ERR_CONFIG' || err.code === 'VIPCAST_ERR_CONFIG_READ')) {
      printConfigError(args.config!, err);
      log.error({ code: err.code, problems: err.details }, 'invalid config');
      await daemon.stop('invalid config').catch(() => undefined);
      process.exit(2);
    }
    log.error({ err }, 'start failed');
    await daemon.stop('start failed').catch(() => undefined);
    process.exit(1);
  }
  running = true;
  if (signals > 0) return; // stopping already (a signal during start)
  // Written only now: `vipcast reload` (and systemd's ExecReload) find a daemon that can answer.
  try {
    daemon.pidFile.adopt(args.pidFile === undefined ? daemon.config.agent.pidFile : resolve(args.pidFile), args.pidFile === undefined ? '' : '--pid-file');
  } catch (err) {
    log.error({ err, code: (err as VipcastError).code }, 'pid file not written: `vipcast reload` cannot find this daemon; running on');
  }
  log.info('vipcast running');
}
