/** SerialQueue (one writer) and Coalescer (reload requests during a reload share one more run). */
import t from 'tap';
import { Coalescer, SerialQueue } from '../src/core/serial-queue.js';

/** A promise the test settles by hand. */
function gate(): { promise: Promise<void>; open: () => void; fail: (e: Error) => void } {
  let open!: () => void;
  let fail!: (e: Error) => void;
  const promise = new Promise<void>((res, rej) => { open = res; fail = rej; });
  return { promise, open, fail };
}

const tick = () => new Promise((r) => setImmediate(r));

t.test('SerialQueue runs one action at a time, in order, and an error reaches only its caller', async (t) => {
  const q = new SerialQueue();
  const log: string[] = [];
  let inFlight = 0;
  let most = 0;
  const act = (name: string, fail = false) => q.run(async () => {
    inFlight++;
    most = Math.max(most, inFlight);
    await tick();
    log.push(name);
    inFlight--;
    if (fail) throw new Error(name);
    return name;
  });
  const results = await Promise.allSettled([act('a'), act('b', true), act('c')]);
  t.same(log, ['a', 'b', 'c']);
  t.equal(most, 1, 'never two at once');
  t.same(results.map((r) => r.status), ['fulfilled', 'rejected', 'fulfilled']);
  t.equal(q.pending, 0);
});

t.test('Coalescer: 20 requests during a run share exactly one more run and its result', async (t) => {
  const gates = [gate(), gate()];
  const calls: Array<[string, number]> = [];
  let inFlight = 0;
  let most = 0;
  const c = new Coalescer<string, string>(async (arg, requests) => {
    const n = calls.push([arg, requests]);
    inFlight++;
    most = Math.max(most, inFlight);
    await gates[n - 1]!.promise;
    inFlight--;
    return `run ${n}`;
  });
  const first = c.request('SIGHUP');
  await tick();
  const burst = Array.from({ length: 20 }, (_, i) => c.request(i === 0 ? 'api' : 'SIGHUP'));
  await tick();
  t.equal(calls.length, 1, 'the burst waits for the run in flight');
  gates[0]!.open();
  t.equal(await first, 'run 1');
  await tick();
  t.same(calls, [['SIGHUP', 1], ['api', 20]], 'one more run, opened by the first queued request, answering all 20');
  gates[1]!.open();
  t.same(new Set(await Promise.all(burst)), new Set(['run 2']), 'every queued request gets the second run\'s result');
  t.equal(most, 1, 'never two runs at once');
  await c.idle();
  const third = gate();
  gates.push(third);
  third.open();
  t.equal(await c.request('later'), 'run 3', 'a request after everything settled starts a new run at once');
});

t.test('Coalescer: a run that throws does not strand the queued requests', async (t) => {
  const g = gate();
  let n = 0;
  const c = new Coalescer<null, number>(async () => {
    n++;
    if (n === 1) {
      await g.promise;
      throw new Error('boom');
    }
    return n;
  });
  const first = c.request(null);
  await tick(); // the first run has started: the next request queues behind it
  const queued = c.request(null);
  g.open();
  await t.rejects(first, /boom/, 'the failure reaches the request that ran it');
  t.equal(await queued, 2, 'the queued request still ran');
});

t.test('Coalescer.idle waits for the queued run too', async (t) => {
  const gates = [gate(), gate()];
  let finished = 0;
  let n = 0;
  const c = new Coalescer<null, void>(async () => {
    await gates[n++]!.promise;
    finished++;
  });
  void c.request(null);
  await tick();
  void c.request(null);
  let idle = false;
  const waiting = c.idle().then(() => { idle = true; });
  gates[0]!.open();
  await tick();
  await tick();
  t.equal(idle, false, 'not idle while the queued run is in flight');
  gates[1]!.open();
  await waiting;
  t.equal(finished, 2);
});

t.test('Coalescer settle window: requests within it join the first run; a burst straddling a run makes two', async (t) => {
  const calls: number[] = [];
  const gates = [gate(), gate()];
  const c = new Coalescer<null, number>(async (_arg, requests) => {
    const n = calls.push(requests);
    await gates[n - 1]!.promise;
    return n;
  }, 40);
  const early = [c.request(null)];
  for (let i = 0; i < 9; i++) {
    await tick();
    early.push(c.request(null));
  }
  await new Promise((r) => setTimeout(r, 80));
  t.same(calls, [10], 'ten requests inside the window: one run answering all ten');
  const late = Array.from({ length: 10 }, () => c.request(null));
  gates.forEach((g) => g.open());
  t.same(await Promise.all(early), Array(10).fill(1));
  t.same(await Promise.all(late), Array(10).fill(2), 'the ten made during the run share the second');
  t.same(calls, [10, 10], 'two runs for twenty requests');
});
