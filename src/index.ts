/**
 * The package's main entry (`import ... from 'vipcast'`): the plugin API, the same module as `vipcast/plugin-api`.
 * vipcast is a daemon and a command (`bin/vipcast.js`), not a library: the daemon's internals are not exported, and
 * importing this entry loads no dependency and starts nothing. Plugin authors may import either specifier; the
 * README ("Install on a host") says how a plugin package resolves `vipcast` on a host.
 */
export * from './plugin-api.js';
