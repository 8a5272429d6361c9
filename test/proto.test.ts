/**
 * proto/ is a hand-written subset of GoBGP v3's API. These tests prove that every message, field, enum value and RPC
 * in it is exactly GoBGP's (name, number, type, label), against the originals from Debian's
 * golang-github-osrg-gobgp-dev, and that every message the router builds uses only fields the subset knows
 * (a misspelled key would be dropped silently and gobgpd would announce something else).
 */
import t from 'tap';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import protobuf from 'protobufjs';
import { pathFor, peerFor, policyFor, neighborSetFor, checkRoute } from '../src/plugins/routing/gobgp/wire.js';
import { parseCommunity, parsePrefix } from '../src/core/values.js';
import { GobgpClient } from '../src/plugins/routing/gobgp/client.js';

const here = dirname(fileURLToPath(import.meta.url));
const repo = [join(here, '..'), join(here, '..', '..')].find((d) => existsSync(join(d, 'proto', 'gobgp.proto')))!;
const MINE = join(repo, 'proto');
const ORIGINALS = '/usr/share/gocode/src/github.com/osrg/gobgp/api';
const FILES = ['gobgp.proto', 'attribute.proto'];

function load(dir: string): protobuf.Root {
  const root = new protobuf.Root();
  // google/protobuf/* come bundled with protobufjs; gobgp.proto is imported by attribute.proto from the same folder.
  root.loadSync(FILES.map((f) => join(dir, f)), { keepCase: true });
  root.resolveAll();
  return root;
}

function walk(ns: protobuf.NamespaceBase, out: protobuf.ReflectionObject[] = []): protobuf.ReflectionObject[] {
  for (const obj of ns.nestedArray) {
    out.push(obj);
    if (obj instanceof protobuf.Namespace) walk(obj, out);
  }
  return out;
}

const typeName = (f: protobuf.Field) => f.resolvedType?.fullName ?? f.type;

const haveOriginals = existsSync(join(ORIGINALS, 'gobgp.proto'));
const skip = haveOriginals ? false : process.env.CI === 'true' ? false : 'golang-github-osrg-gobgp-dev is not installed';

t.test('every message, field, enum value and RPC in proto/ is exactly as in GoBGP 3.x', { skip }, async (t) => {
  t.ok(haveOriginals, `GoBGP's original .proto files are at ${ORIGINALS}`);
  const mine = load(MINE);
  const orig = load(ORIGINALS);
  const pkg = mine.lookup('apipb') as protobuf.Namespace;
  t.ok(pkg, 'package apipb');
  let fields = 0;
  let values = 0;
  let methods = 0;
  for (const obj of walk(pkg)) {
    const other = orig.lookup(obj.fullName);
    if (!other) {
      t.fail(`${obj.fullName} does not exist in GoBGP's API`);
      continue;
    }
    if (obj instanceof protobuf.Type) {
      t.ok(other instanceof protobuf.Type, `${obj.fullName} is a message in GoBGP too`);
      const o = other as protobuf.Type;
      for (const f of obj.fieldsArray) {
        const g = o.fields[f.name];
        if (!g) {
          t.fail(`${obj.fullName}.${f.name} is not a field of GoBGP's ${obj.fullName}`);
          continue;
        }
        fields++;
        t.same(
          { id: f.id, type: typeName(f), repeated: f.repeated, map: f.map, oneof: f.partOf?.name },
          { id: g.id, type: typeName(g), repeated: g.repeated, map: g.map, oneof: g.partOf?.name },
          `${obj.fullName}.${f.name}`,
        );
      }
    } else if (obj instanceof protobuf.Enum) {
      t.ok(other instanceof protobuf.Enum, `${obj.fullName} is an enum in GoBGP too`);
      const o = other as protobuf.Enum;
      for (const [name, id] of Object.entries(obj.values)) {
        values++;
        t.equal(o.values[name], id, `${obj.fullName}.${name} = ${id}`);
      }
    } else if (obj instanceof protobuf.Service) {
      const o = other as protobuf.Service;
      for (const m of obj.methodsArray) {
        const g = o.methods[m.name];
        if (!g) {
          t.fail(`rpc ${m.name} is not in GoBGP's ${obj.fullName}`);
          continue;
        }
        methods++;
        m.resolve();
        g.resolve();
        t.same(
          { req: m.resolvedRequestType?.fullName, res: m.resolvedResponseType?.fullName, reqStream: !!m.requestStream, resStream: !!m.responseStream },
          { req: g.resolvedRequestType?.fullName, res: g.resolvedResponseType?.fullName, reqStream: !!g.requestStream, resStream: !!g.responseStream },
          `rpc ${m.name}`,
        );
      }
    }
  }
  t.ok(fields > 100 && values > 50 && methods >= 15, `compared ${fields} fields, ${values} enum values, ${methods} RPCs`);
});

t.test('every RPC the router calls is in proto/', async (t) => {
  const mine = load(MINE);
  const svc = mine.lookup('apipb.GobgpApi') as protobuf.Service;
  // Every module of the plugin: the router is split into connection.ts, paths.ts and peers.ts (managed.ts probes too).
  const dir = join(repo, 'src', 'plugins', 'routing', 'gobgp');
  const src = readdirSync(dir).filter((f) => f.endsWith('.ts')).map((f) => readFileSync(join(dir, f), 'utf8')).join('\n');
  const called = new Set([...src.matchAll(/(?:call|callStream(?:<[^(]*>)?|unary(?:<[^(]*>)?|stream(?:<[^(]*>)?|clientStream(?:<[^(]*>)?)\((?:client, )?'(\w+)'/g)].map((m) => m[1]!));
  t.ok(called.size >= 15, `found ${called.size} RPC names in the router: ${[...called].join(', ')}`);
  for (const m of called) t.ok(svc.methods[m], `rpc ${m} is declared`);
});

/** Every key of `obj` is a field of `type` (recursively, through google.protobuf.Any's '@type'). */
function unknownKeys(root: protobuf.Root, type: protobuf.Type, obj: unknown, path: string, out: string[] = []): string[] {
  if (obj === null || obj === undefined || typeof obj !== 'object') return out;
  let t = type;
  const record = obj as Record<string, unknown>;
  if (type.fullName === '.google.protobuf.Any') {
    const url = record['@type'];
    const inner = typeof url === 'string' ? root.lookup(url.replace(/^type\.googleapis\.com\//, '')) : null;
    if (!(inner instanceof protobuf.Type)) {
      out.push(`${path}: Any of unknown type ${String(url)}`);
      return out;
    }
    t = inner;
  }
  for (const [k, v] of Object.entries(record)) {
    if (k === '@type') continue;
    const f = t.fields[k];
    if (!f) {
      out.push(`${path}.${k} (not a field of ${t.fullName})`);
      continue;
    }
    if (f.resolvedType instanceof protobuf.Type) {
      for (const [i, item] of (f.repeated && Array.isArray(v) ? v : [v]).entries()) unknownKeys(root, f.resolvedType, item, `${path}.${k}${f.repeated ? `[${i}]` : ''}`, out);
    } else if (f.resolvedType instanceof protobuf.Enum && v !== undefined) {
      if (typeof v === 'string' && !(v in f.resolvedType.values)) out.push(`${path}.${k} = ${v} (not a value of ${f.resolvedType.fullName})`);
    }
  }
  return out;
}

t.test('the messages the router builds use only fields and enum values proto/ declares', async (t) => {
  const root = load(MINE);
  const T = (n: string) => root.lookupType(n);
  const comms = ['65000:100', 'no-export', '65000:1:2'].map((c) => parseCommunity(c, 'c'));
  for (const [text, nh] of [['198.18.7.7/32', '198.18.0.1'], ['2001:db8::7/128', '::']] as const) {
    const route = { prefix: parsePrefix(text, 'p'), app: 'a', origin: 'egp' as const, communities: comms };
    const path = pathFor(route, checkRoute(route, nh), nh);
    t.same(unknownKeys(root, T('apipb.AddPathRequest'), { table_type: 'GLOBAL', path }, 'AddPath'), [], `AddPath ${text}`);
    t.same(unknownKeys(root, T('apipb.DeletePathRequest'), { table_type: 'GLOBAL', family: path.family, path }, 'DeletePath'), [], `DeletePath ${text}`);
    t.same(unknownKeys(root, T('apipb.AddPathStreamRequest'), { table_type: 'GLOBAL', paths: [path, { ...path, is_withdraw: true }] }, 'AddPathStream'), [], `AddPathStream ${text}`);
    // Round trip through the wire format: nothing dropped.
    const msg = T('apipb.Path').fromObject(path);
    const back = T('apipb.Path').toObject(T('apipb.Path').decode(T('apipb.Path').encode(msg).finish()), { json: true, enums: String, longs: Number }) as Record<string, unknown>;
    t.same(back.nlri, path.nlri, `NLRI of ${text} survives encoding`);
    t.same(back.pattrs, path.pattrs, `attributes of ${text} survive encoding`);
  }
  const peer = peerFor({ address: '198.18.0.2', asn: 65001, localAddress: '198.18.0.1', multihop: true, password: 'x', communities: [] });
  t.same(unknownKeys(root, T('apipb.AddPeerRequest'), { peer }, 'AddPeer'), []);
  t.same(unknownKeys(root, T('apipb.AddPolicyRequest'), { policy: policyFor('198.18.0.2', comms), refer_existing_statements: false }, 'AddPolicy'), []);
  t.same(unknownKeys(root, T('apipb.AddDefinedSetRequest'), { defined_set: neighborSetFor('2001:db8::2') }, 'AddDefinedSet'), []);
  t.same(unknownKeys(root, T('apipb.AddPolicyAssignmentRequest'), { assignment: { name: 'global', direction: 'EXPORT', policies: [{ name: 'p' }], default_action: 'ACCEPT' } }, 'AddPolicyAssignment'), []);
  t.same(unknownKeys(root, T('apipb.ResetPeerRequest'), { address: '198.18.0.2', soft: true, direction: 'OUT' }, 'ResetPeer'), []);
  t.same(unknownKeys(root, T('apipb.StartBgpRequest'), { global: { asn: 65000, router_id: '198.18.0.1', listen_port: 179, listen_addresses: ['198.18.0.1'] } }, 'StartBgp'), []);
  t.same(unknownKeys(root, T('apipb.AddPathRequest'), { path: { nlri: { '@type': 'type.googleapis.com/apipb.IPAddresPrefix' } } }, 'x').length, 1, 'the check itself catches a misspelled Any type');
  t.same(unknownKeys(root, T('apipb.AddPeerRequest'), { peer: { conf: { peerAsn: 1 } } }, 'x').length, 1, 'the check itself catches a camelCase key');
});

t.test('the client loads proto/ the way the router does (both files, one root)', async (t) => {
  const c = new GobgpClient('unix:///nonexistent/vipcast-proto-test.sock', { timeoutMs: 300 });
  const err = await c.unary('GetBgp', {}).catch((e: unknown) => e);
  c.close();
  t.match(err, { name: 'GobgpCallError', unreachable: true }, 'a missing gobgpd is reported as unreachable, not as a load error');
});
