/** `vipcast --help`: the commands, options, signals and exit codes (text only, so --help loads nothing else). */
export const HELP = `vipcast: health-checked anycast host agent (gocast compatible)

Usage:
  vipcast run -c FILE [--dry-run] [--log-level LEVEL] [--pid-file FILE]   run the daemon
  vipcast -config FILE                                  gocast's form of "run"
  vipcast validate -c FILE                              check a config file; exit 0 (summary) or 2 (every error)
  vipcast check -c FILE [APP] [--json]                  run every monitor of the config's apps (or of APP) once and
                                                        print each result and duration; exit 0 all up, 1 any down,
                                                        2 invalid config (touches no route, address or NAT rule)
  vipcast reload [-c FILE] [--pid-file FILE]            make the running daemon reload its config (SIGHUP)
  vipcast status [-c FILE | --api ADDR] [--json]        the running daemon's apps, routes, peers and last reload
  vipcast maintenance APP on|off [-c FILE | --api ADDR]  take an app out of service (its routes withdrawn, drained
                                                        first with agent.shutdown_drain) or put it back
  vipcast maintenance --all on|off [-c FILE | --api ADDR]  the same for every app (host-wide, planned work)
  vipcast maintenance [-c FILE | --api ADDR] [--json]   list what is in maintenance, by whom and since when
  vipcast --help | --version

Options:
  -c, --config FILE     config file (YAML, gocast-compatible)
  --dry-run             log every route and host change instead of making it (no gobgpd, no root needed)
  --log-level LEVEL     trace|debug|info|warn|error (default info)
  --api ADDR            with status: the daemon's API address (default: agent.listen_addr of the config)
  --json                with status: the raw /status JSON; with maintenance: the raw answer; with check: the
                        results as JSON
  --all                 with maintenance: the whole host
  --pid-file FILE       pid file of the running daemon (default: agent.pid_file of the config); for run, it
                        overrides agent.pid_file (written once the daemon runs, removed at exit)

Plugins: the config's "plugins:" key lists npm packages (monitors, discovery sources, routers), each installed
next to the config file (cd /etc/vipcast && npm install vipcast-monitor-NAME); run, validate and check load them.

Signals: SIGTERM/SIGINT withdraw every route and exit (a second one forces exit); SIGHUP reloads the config
(one sent while vipcast is still starting is answered by a reload once it runs).

Maintenance is kept across reloads and restarts (agent.maintenance_state_file). With -c, the token of
agent.api_token_file / agent.api_token_env is sent; without one, root or agent.api_allowed_users may call it over
loopback, anyone who can open a unix socket API. Exit: 0 done, 1 daemon unreachable or the change refused, 2 usage.`;
