/**
 * The `config` discovery: the config file's `apps` as a discovery source (source 'config'). Its settings are the apps
 * the config loader has already validated (key paths `apps[i]...`, the prefix policy, the monitor types), so
 * parseSettings only checks their shape. It delivers its apps once, when started; a reload with other apps starts a
 * new instance (the registry replaces the source's apps by name: unchanged apps are not touched).
 */
import type { AppSpec, Discovery, DiscoveryPlugin } from '../../../plugin-api.js';
import { PLUGIN_API_VERSION } from '../../../plugin-api.js';
import { valueError } from '../../../core/errors.js';

export interface ConfigDiscoverySettings {
  /** The config file's apps, validated at config load. */
  readonly apps: readonly AppSpec[];
}

class ConfigDiscovery implements Discovery {
  readonly name = 'config';
  constructor(private readonly list: readonly AppSpec[]) {}

  async start(onChange: (apps: readonly AppSpec[]) => void): Promise<void> {
    // Synchronous on purpose: the daemon (and a reload) know the config apps' fate when start resolves.
    onChange(this.list);
  }

  apps(): readonly AppSpec[] {
    return this.list;
  }

  async close(): Promise<void> {}
}

const configDiscovery: DiscoveryPlugin<ConfigDiscoverySettings> = {
  kind: 'discovery',
  name: 'config',
  version: '1.0.0',
  apiVersion: `^${PLUGIN_API_VERSION}`,
  parseSettings(raw, ctx) {
    const apps = (raw as { apps?: unknown } | null)?.apps;
    if (!Array.isArray(apps)) throw valueError(`${ctx.path}.apps`, 'is not a list of validated apps');
    return Object.freeze({ apps: Object.freeze([...apps] as AppSpec[]) });
  },
  sameSettings(a, b) {
    return a.apps === b.apps;
  },
  create(ctx) {
    return new ConfigDiscovery(ctx.settings.apps);
  },
};

export default configDiscovery;
