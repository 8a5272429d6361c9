/**
 * A thin promise wrapper around GoBGP v3's gRPC service (package `apipb`, loaded from the hand-written subset in
 * `proto/`). It knows nothing about vipcast's types: see `wire.ts` for the messages and `router.ts` (with
 * `connection.ts`, `paths.ts`, `peers.ts`) for the logic.
 */
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

/** A failed call: the gRPC status code and gobgpd's message (gobgpd answers every refusal with code 2, UNKNOWN). */
export class GobgpCallError extends Error {
  constructor(readonly method: string, readonly code: number, readonly details: string, options?: { cause?: unknown }) {
    super(`${method}: ${details}`, options);
    this.name = 'GobgpCallError';
  }

  /** True when gobgpd did not answer at all (down, restarting, socket missing) rather than refusing the request. */
  get unreachable(): boolean {
    return this.code === grpc.status.UNAVAILABLE || this.code === grpc.status.DEADLINE_EXCEEDED || this.code === grpc.status.CANCELLED;
  }
}

let cached: grpc.GrpcObject | undefined;

/** Where `proto/` is: the package root, found by walking up from this module (works from src/ and from dist/). */
function protoDir(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 8; i++) {
    if (existsSync(join(dir, 'proto', 'gobgp.proto'))) return join(dir, 'proto');
    dir = dirname(dir);
  }
  throw new Error('cannot find proto/gobgp.proto above ' + fileURLToPath(import.meta.url));
}

function loadApi(): grpc.GrpcObject {
  if (cached) return cached;
  // gobgp.proto does not import attribute.proto, yet Path's Any fields carry its messages: load both into one root.
  // keepCase: field names stay snake_case as in the .proto (a camelCase key would be dropped silently).
  // json: Any values are packed from / unpacked into `{ '@type': 'type.googleapis.com/apipb.X', ...fields }`.
  const def = protoLoader.loadSync(['gobgp.proto', 'attribute.proto'], {
    includeDirs: [protoDir()],
    keepCase: true,
    longs: Number,
    enums: String,
    defaults: true,
    oneofs: true,
    json: true,
  });
  cached = grpc.loadPackageDefinition(def);
  return cached;
}

type Callback = (err: grpc.ServiceError | null, res: unknown) => void;
type ServiceClient = grpc.Client & Record<string, (req: unknown, meta: grpc.Metadata, opts: grpc.CallOptions, cb?: Callback) => unknown>;

export interface GobgpClientOptions {
  /** Per-call deadline. */
  timeoutMs?: number;
  /** Cap of the channel's reconnect backoff: how late after gobgpd comes back the channel notices at worst. */
  maxReconnectBackoffMs?: number;
}

export class GobgpClient {
  private readonly client: ServiceClient;
  private readonly timeoutMs: number;
  private closed = false;

  /** `target`: `host:port`, `[v6]:port` or `unix:///path`, as in `routing.gobgp.address`. */
  constructor(readonly target: string, opts: GobgpClientOptions = {}) {
    const api = loadApi();
    const Ctor = (api.apipb as grpc.GrpcObject).GobgpApi as grpc.ServiceClientConstructor;
    const maxBackoff = opts.maxReconnectBackoffMs ?? 500;
    this.client = new Ctor(target, grpc.credentials.createInsecure(), {
      // grpc's default backoff grows to 120 s: far too slow to notice a restarted gobgpd within the 2 s budget.
      'grpc.initial_reconnect_backoff_ms': Math.min(100, maxBackoff),
      'grpc.max_reconnect_backoff_ms': maxBackoff,
      'grpc.enable_retries': 0,
    }) as unknown as ServiceClient;
    this.timeoutMs = opts.timeoutMs ?? 10_000;
  }

  /** One request, one response. */
  unary<Res>(method: string, req: object, timeoutMs = this.timeoutMs): Promise<Res> {
    return new Promise((resolve, reject) => {
      if (this.closed) return reject(new GobgpCallError(method, grpc.status.CANCELLED, 'client closed'));
      const fn = this.client[method];
      if (typeof fn !== 'function') return reject(new GobgpCallError(method, grpc.status.UNIMPLEMENTED, 'not in proto/gobgp.proto'));
      fn.call(this.client, req, new grpc.Metadata(), { deadline: Date.now() + timeoutMs }, (err, res) => {
        if (err) reject(toCallError(method, err));
        else resolve(res as Res);
      });
    });
  }

  /** One request, a stream of responses collected into an array. */
  stream<Res>(method: string, req: object, timeoutMs = this.timeoutMs): Promise<Res[]> {
    return new Promise((resolve, reject) => {
      if (this.closed) return reject(new GobgpCallError(method, grpc.status.CANCELLED, 'client closed'));
      const fn = this.client[method];
      if (typeof fn !== 'function') return reject(new GobgpCallError(method, grpc.status.UNIMPLEMENTED, 'not in proto/gobgp.proto'));
      const out: Res[] = [];
      const call = fn.call(this.client, req, new grpc.Metadata(), { deadline: Date.now() + timeoutMs }) as grpc.ClientReadableStream<Res>;
      call.on('data', (d: Res) => out.push(d));
      call.on('error', (err: grpc.ServiceError) => reject(toCallError(method, err)));
      call.on('end', () => resolve(out));
    });
  }

  /** A stream of requests, one response (AddPathStream). */
  clientStream<Res>(method: string, reqs: readonly object[], timeoutMs = this.timeoutMs): Promise<Res> {
    return new Promise((resolve, reject) => {
      if (this.closed) return reject(new GobgpCallError(method, grpc.status.CANCELLED, 'client closed'));
      const fn = this.client[method] as unknown as ((meta: grpc.Metadata, opts: grpc.CallOptions, cb: Callback) => grpc.ClientWritableStream<object>) | undefined;
      if (typeof fn !== 'function') return reject(new GobgpCallError(method, grpc.status.UNIMPLEMENTED, 'not in proto/gobgp.proto'));
      const call = fn.call(this.client, new grpc.Metadata(), { deadline: Date.now() + timeoutMs }, (err, res) => {
        if (err) reject(toCallError(method, err));
        else resolve(res as Res);
      });
      for (const r of reqs) call.write(r);
      call.end();
    });
  }

  /** The channel's state; `tryConnect` starts a connection attempt from IDLE. */
  state(tryConnect = false): grpc.connectivityState {
    return this.client.getChannel().getConnectivityState(tryConnect);
  }

  /** Resolves when the channel leaves `from`, or at the deadline. */
  waitForChange(from: grpc.connectivityState, deadlineMs: number): Promise<void> {
    return new Promise((resolve) => {
      if (this.closed) return resolve();
      this.client.getChannel().watchConnectivityState(from, Date.now() + deadlineMs, () => resolve());
    });
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.client.close();
  }
}

function toCallError(method: string, err: grpc.ServiceError): GobgpCallError {
  return new GobgpCallError(method, err.code ?? grpc.status.UNKNOWN, err.details || err.message, { cause: err });
}

export const ConnectivityState = grpc.connectivityState;
