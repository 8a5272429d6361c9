/**
 * HTTP registrations across restarts of the real CLI in dry-run (issue 10, item 3): written by the time SIGTERM exits
 * and back at the next start; a reload that narrows the policy and moves agent.registrations_file; cleanup_timer
 * drops. (The file itself: registration-store.test; at a real BIRD: registrations-restart.test.)
 */
import t from 'tap';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { RegistrationsFile } from '../src/core/registration-store.js';
import { DaemonProcess, closeServer, freePort, serve } from './helpers/daemon.js';

const readJson = (file: string) => JSON.parse(readFileSync(file, 'utf8')) as RegistrationsFile;
const names = (f: RegistrationsFile) => f.registrations.map((r) => r.name);

t.test('the daemon (dry-run CLI): registrations back after a SIGTERM restart; a reload that narrows the policy and moves the file writes the new file without the refused app', async (t) => {
  const dir = t.testdir();
  const port = await freePort();
  const file = join(dir, 'vipcast.yaml');
  const write = (agent: string) => writeFileSync(file, `agent:\n  listen_addr: 127.0.0.1:${port}\n  monitor_interval: 100ms\n${agent}\nrouting: { plugin: dry-run }\napps:\n  - { name: cfg, vip: 198.18.92.1/32 }\n`);
  const api = async (path: string, method = 'GET') => {
    const res = await fetch(`http://127.0.0.1:${port}${path}`, { method });
    return { status: res.status, body: await res.text() };
  };
  const status = async () => JSON.parse((await api('/status')).body) as { apps: Array<{ name: string; source: string; restored?: boolean }>; registrations: { file: string; restored: number; pending: boolean } };
  const start = async () => {
    const d = new DaemonProcess(['run', '-c', file]);
    t.teardown(() => d.stop());
    await d.waitLine((l) => l.msg === 'HTTP API listening', 30_000, 'API up');
    return d;
  };
  write('  registrations_file: regs.json');
  const d1 = await start();
  t.equal((await api('/register?name=a&vip=198.18.90.1/32&monitor=port:tcp:1')).status, 200);
  t.equal((await api('/register?name=b&vip=198.18.91.1/32')).status, 200);
  t.equal((await api('/register?name=cfg&vip=198.18.93.1/32')).status, 409, 'a config app\'s name is refused at runtime, as at restore');
  d1.kill('SIGTERM');
  t.equal((await d1.exited).code, 0);
  t.same(names(readJson(join(dir, 'regs.json'))), ['a', 'b'], 'written by the time SIGTERM exits');

  const d2 = await start();
  const st = await status();
  t.same(st.apps.filter((a) => a.source === 'http').map((a) => [a.name, a.restored]), [['a', true], ['b', true]], 'both back, restored, source http');
  t.match(st.registrations, { file: join(dir, 'regs.json'), restored: 2 });
  t.ok(d2.lines.some((l) => /^HTTP registrations restored: 2 of 2/.test(l.msg)));

  write('  registrations_file: moved/regs.json\n  allowed_prefixes: [198.18.90.0/24, 198.18.92.0/24]');
  const r = await api('/reload', 'POST');
  t.equal(r.status, 200, r.body);
  t.match(r.body, /agent\.registrationsFile: changed/);
  await d2.waitLine((l) => l.app === 'b' && /HTTP app removed: the prefix policy now refuses it/.test(l.msg), 5000, 'b removed by the reload');
  let moved: string[] | string = [];
  const deadline = Date.now() + 5000;
  while (Date.now() < deadline) {
    try {
      moved = names(readJson(join(dir, 'moved/regs.json')));
      if (moved.length === 1) break;
    } catch (err) {
      moved = String(err);
    }
    await new Promise((res) => setTimeout(res, 50));
  }
  t.same(moved, ['a'], 'the new file holds the set without the refused app');
  t.same(names(readJson(join(dir, 'regs.json'))), ['a', 'b'], 'the old file is left as it was');
  t.equal((await status()).registrations.file, join(dir, 'moved/regs.json'));
  d2.kill('SIGTERM');
  t.equal((await d2.exited).code, 0);

  write('');
  const d3 = await start();
  const st3 = await status();
  t.equal(st3.registrations.file, '', 'a dry run without the key keeps no registrations');
  t.same(st3.apps.map((a) => a.name), ['cfg']);
  d3.kill('SIGTERM');
  await d3.exited;
});

t.test('the daemon (dry-run CLI): an HTTP app dropped by cleanup_timer leaves the file too', async (t) => {
  const dir = t.testdir();
  const port = await freePort();
  const appPort = await freePort();
  const file = join(dir, 'vipcast.yaml');
  writeFileSync(file, `agent:\n  listen_addr: 127.0.0.1:${port}\n  monitor_interval: 100ms\n  cleanup_timer: 500ms\n  registrations_file: regs.json\nrouting: { plugin: dry-run }\n`);
  const d = new DaemonProcess(['run', '-c', file]);
  t.teardown(() => d.stop());
  await d.waitLine((l) => l.msg === 'HTTP API listening', 30_000, 'API up');
  // Up (and announced) while the test listens on appPort; down for good once it stops.
  const listener = await serve(t, appPort);
  t.equal((await fetch(`http://127.0.0.1:${port}/register?name=gone&vip=198.18.94.1/32&monitor=port:tcp:${appPort}`)).status, 200);
  t.equal((await fetch(`http://127.0.0.1:${port}/register?name=stays&vip=198.18.94.2/32`)).status, 200);
  await d.waitLine((l) => l.event === 'route' && l.action === 'announce' && l.app === 'gone', 10_000, 'gone announced');
  await closeServer(listener);
  await d.waitLine((l) => l.app === 'gone' && /app down for cleanup_timer/.test(l.msg), 15_000, 'gone dropped by cleanup_timer');
  let saved: string[] | string = [];
  const deadline = Date.now() + 5000;
  while (Date.now() < deadline) {
    try {
      saved = names(readJson(join(dir, 'regs.json')));
      if (saved.length === 1) break;
    } catch (err) {
      saved = String(err);
    }
    await new Promise((res) => setTimeout(res, 50));
  }
  t.same(saved, ['stays'], 'the file follows the drop');
  d.kill('SIGTERM');
  t.equal((await d.exited).code, 0);
});
