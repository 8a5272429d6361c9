/**
 * The plugin's own tests, with Node's built-in test runner (`node --test`) and vipcast/testing: each case loads this
 * package as vipcast loads it, parses a spec as the config parses it and runs the check once in a real worker thread.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { runMonitorOnce } from 'vipcast/testing';
import { formatDuration, parseDuration } from '../src/params.js';

/** This package's folder (the tests run from dist/test/). */
const PKG = fileURLToPath(new URL('../..', import.meta.url));

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), 'file-age-'));
  process.on('exit', () => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

test('a file modified just now is up', async () => {
  const file = join(tempDir(), 'heartbeat');
  writeFileSync(file, 'ok\n');
  const r = await runMonitorOnce(PKG, `file-age:30s:${file}`, { timeoutMs: 5000 });
  assert.equal(r.ok, true, r.reason);
  assert.match(r.reason, /modified \d+ m?s ago \(max 30s\)$/);
  assert.equal(r.monitor.text, `file-age:30s:${file}`, 'vipcast adds "file-age:" to the text parse gives');
  assert.deepEqual(r.monitor.params, { path: file, maxAgeMs: 30_000 });
});

test('a file older than max age is down, with its age', async () => {
  const file = join(tempDir(), 'heartbeat');
  writeFileSync(file, 'ok\n');
  const hourAgo = new Date(Date.now() - 3_600_000);
  utimesSync(file, hourAgo, hourAgo);
  const r = await runMonitorOnce(PKG, `file-age:5m:${file}`);
  assert.equal(r.ok, false);
  assert.match(r.reason, /modified 36\d\d s ago \(max 5m\)$/);
});

test('a missing file is down', async () => {
  const file = join(tempDir(), 'nothing-here');
  const r = await runMonitorOnce(PKG, `file-age:30s:${file}`);
  assert.equal(r.ok, false);
  assert.equal(r.reason, `${file}: missing`);
});

test('the structured form; a relative path is relative to the config file\'s folder', async () => {
  const dir = tempDir();
  writeFileSync(join(dir, 'status'), 'ok\n');
  const r = await runMonitorOnce(PKG, { type: 'file-age', path: 'status', max_age: '2m' }, { baseDir: dir });
  assert.equal(r.ok, true, r.reason);
  assert.equal(r.monitor.text, `file-age:2m:${join(dir, 'status')}`);
});

test('bad specs are refused with the key path, as vipcast validate shows them', async () => {
  await assert.rejects(runMonitorOnce(PKG, 'file-age:/run/x', { path: 'apps[0].monitors[0]' }), {
    code: 'VIPCAST_ERR_VALUE',
    message: 'apps[0].monitors[0]: "file-age:/run/x" is not MAX_AGE:PATH (e.g. file-age:30s:/run/web/heartbeat)',
  });
  await assert.rejects(runMonitorOnce(PKG, 'file-age:soon:/run/x'), { code: 'VIPCAST_ERR_VALUE', message: 'monitor: "soon" is not a duration (e.g. 30s, 5m, 1h)' });
  await assert.rejects(runMonitorOnce(PKG, 'file-age:30s: '), { code: 'VIPCAST_ERR_VALUE', message: /^monitor: a file-age monitor needs a path$/ });
  await assert.rejects(runMonitorOnce(PKG, { type: 'file-age', path: '/x', max_age: '1s', mode: 'x' }), {
    code: 'VIPCAST_ERR_VALUE',
    message: 'monitor.mode: unknown key for a file-age monitor (known: path, max_age)',
  });
  await assert.rejects(runMonitorOnce(PKG, { type: 'file-age', path: '/x', max_age: 'soon' }), { message: /^monitor\.max_age: "soon" is not a duration/ });
});

test('durations', () => {
  assert.equal(parseDuration('500ms', 'p'), 500);
  assert.equal(parseDuration('1.5s', 'p'), 1500);
  assert.equal(parseDuration(250, 'p'), 250);
  assert.equal(formatDuration(90_000), '90s');
  assert.equal(formatDuration(300_000), '5m');
  assert.throws(() => parseDuration('0s', 'p'), /^Error: p: "0s" is not a duration/);
});
