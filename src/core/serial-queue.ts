/** One writer (invariant 3): every effect on the speaker or the host runs through one of these, one at a time. */
export class SerialQueue {
  private tail: Promise<unknown> = Promise.resolve();
  private depth = 0;

  /** Run `fn` after everything queued before it; its result or error is returned to the caller only. */
  run<T>(fn: () => Promise<T>): Promise<T> {
    this.depth++;
    const result = this.tail.then(fn);
    this.tail = result.then(
      () => { this.depth--; },
      () => { this.depth--; },
    );
    return result;
  }

  /** Actions queued or running. */
  get pending(): number {
    return this.depth;
  }

  /** Resolves when everything queued so far has run (whether it succeeded or failed). */
  settled(): Promise<void> {
    return this.tail.then(() => undefined);
  }
}

interface Run<T> {
  promise: Promise<T>;
  requests: number;
  /** False while the run waits out its settle window: requests made then join it. */
  started: boolean;
}

/**
 * One run at a time, at most one more queued. A run first waits `settleMs`; requests made in that window join it.
 * Requests made while it executes share the next run and its result. So a burst of 20 SIGHUPs is one reload when it
 * lasts less than the window and two when it straddles a run, never twenty and never two at once. The next run starts
 * after the current one settles, whether it succeeded or threw.
 */
export class Coalescer<A, T> {
  private current: Run<T> | undefined;
  private next: Run<T> | undefined;

  /** `fn` gets the argument of the request that opened the run and how many requests the run answers. */
  constructor(private readonly fn: (arg: A, requests: number) => Promise<T>, private readonly settleMs = 0) {}

  request(arg: A): Promise<T> {
    const joinable = this.current && !this.current.started ? this.current : this.next;
    if (joinable) {
      joinable.requests++;
      return joinable.promise;
    }
    const run: Run<T> = { requests: 1, started: false, promise: undefined as unknown as Promise<T> };
    const begin = (): Promise<T> => {
      this.current = run;
      if (this.next === run) this.next = undefined;
      const settled = this.settleMs > 0 ? new Promise<void>((r) => setTimeout(r, this.settleMs)) : Promise.resolve();
      return settled.then(() => {
        run.started = true;
        return this.fn(arg, run.requests);
      });
    };
    if (this.current) {
      this.next = run;
      run.promise = this.current.promise.then(begin, begin);
    } else {
      run.promise = begin();
    }
    const clear = () => { if (this.current === run) this.current = undefined; };
    run.promise.then(clear, clear);
    return run.promise;
  }

  /** Resolves when nothing runs and nothing is queued (errors are the requesters' to see, not this). */
  async idle(): Promise<void> {
    for (let r = this.next ?? this.current; r; r = this.next ?? this.current) {
      await r.promise.then(() => undefined, () => undefined);
    }
  }
}
