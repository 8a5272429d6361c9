/**
 * Every coded error vipcast throws. Each code is documented in README.md ("Error codes"); a test checks that.
 */
export const ERROR_CODES = {
  VIPCAST_ERR_CONFIG: 'the config file is invalid (every problem is listed with its key path)',
  VIPCAST_ERR_CONFIG_READ: 'the config file could not be read or is not valid YAML',
  VIPCAST_ERR_VALUE: 'a value (prefix, community, port, monitor, NAT spec, name) is malformed',
  VIPCAST_ERR_PLUGIN_NOT_FOUND: 'a plugin named in the config is not installed',
  VIPCAST_ERR_PLUGIN_LOAD: 'a plugin is installed but failed to load (its code threw, or one of its dependencies is missing)',
  VIPCAST_ERR_PLUGIN_SHAPE: 'a plugin package does not export a plugin descriptor: no object, a kind that is not monitor, discovery or router, a bad name, or a member its family needs missing; or a monitor\'s workerModule does not exist or exports no check function',
  VIPCAST_ERR_PLUGIN_VERSION: "a plugin needs a plugin API version this vipcast doesn't provide",
  VIPCAST_ERR_PLUGIN_NAME: 'a plugin package takes a name a built-in plugin of its family, or another package of the config, already has',
  VIPCAST_ERR_ROUTER: 'the routing backend (gobgpd) refused or failed an operation',
  VIPCAST_ERR_ROUTER_CONFLICT: 'gobgpd already runs with another AS or its listen port is taken',
  VIPCAST_ERR_SPEAKER: 'the managed gobgpd (routing.gobgp.managed) could not start: binary or setpriv missing, socket directory not private, socket served by another process, or gobgpd did not answer',
  VIPCAST_ERR_HOST: 'a host command (ip, iptables) failed',
  VIPCAST_ERR_HOST_PERMISSION: 'a host command was refused for lack of privileges (run as root or with CAP_NET_ADMIN)',
  VIPCAST_ERR_HOST_BINARY: 'a host command (ip, iptables-restore) is not installed',
  VIPCAST_ERR_REGISTRATION: 'an app registration (HTTP or Consul) was refused',
  VIPCAST_ERR_PREFIX_POLICY: 'a VIP or community is not allowed by the prefix policy (a default route, loopback, a peer\'s address, outside agent.allowed_prefixes...)',
  VIPCAST_ERR_RELOAD: 'a reload failed; the previous config stays in force',
  VIPCAST_ERR_USAGE: 'the command line is wrong',
  VIPCAST_ERR_PID_FILE: 'the pid file (agent.pid_file or --pid-file) could not be written',
  VIPCAST_ERR_API_AUTH: 'an HTTP API caller may not call a mutating endpoint (401: no or wrong bearer token; 403: a local user not allowed)',
  VIPCAST_ERR_API_LIMIT: 'an HTTP API caller sent too many mutating requests (429, with Retry-After)',
  VIPCAST_ERR_INTERNAL: 'an unexpected error (a bug) reached the top of the daemon; it was logged and the daemon went on',
} as const;

export type ErrorCode = keyof typeof ERROR_CODES;

/** An error with a stable code; `cause` keeps the underlying error. */
export class VipcastError extends Error {
  readonly code: ErrorCode;
  /** For config errors: one message per problem, each starting with its key path. */
  readonly details: readonly string[];

  constructor(code: ErrorCode, message: string, options: { cause?: unknown; details?: readonly string[] } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'VipcastError';
    this.code = code;
    this.details = options.details ?? [];
  }
}

/** Every problem an error carries: a VipcastError's details (each with its key path), else its one message. */
export function errorDetails(err: unknown): readonly string[] {
  if (err instanceof VipcastError && err.details.length > 0) return err.details;
  return [err instanceof Error ? err.message : String(err)];
}

/** A malformed value; `path` names where it came from (config key path or HTTP parameter). */
export function valueError(path: string, message: string): VipcastError {
  return new VipcastError('VIPCAST_ERR_VALUE', `${path}: ${message}`);
}
