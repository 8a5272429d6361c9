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

  /** Resolves when everything queued so far has finished. */
  async idle(): Promise<void> {
    await this.tail;
  }
}

/**
 * One run at a time, at most one more queued: requests made while a run is in flight share the next run and its
 * result (a burst of 20 SIGHUPs is two reloads, never twenty, never two at once). The next run starts after the
 * current one settles, whether it succeeded or threw.
 */
export class Coalescer<A, T> {
  private running: Promise<T> | undefined;
  private next: { promise: Promise<T>; requests: number } | undefined;

  /** `fn` gets the argument of the request that opened the run and how many requests the run answers. */
  constructor(private readonly fn: (arg: A, requests: number) => Promise<T>) {}

  request(arg: A): Promise<T> {
    if (!this.running) return this.start(arg, 1);
    if (this.next) {
      this.next.requests++;
      return this.next.promise;
    }
    const slot = { requests: 1, promise: undefined as unknown as Promise<T> };
    const after = () => {
      this.next = undefined;
      return this.start(arg, slot.requests);
    };
    slot.promise = this.running.then(after, after);
    this.next = slot;
    return slot.promise;
  }

  /** Resolves when nothing runs and nothing is queued (errors are the requesters' to see, not this). */
  async idle(): Promise<void> {
    for (let p = this.next?.promise ?? this.running; p; p = this.next?.promise ?? this.running) {
      await p.then(() => undefined, () => undefined);
    }
  }

  private start(arg: A, requests: number): Promise<T> {
    const run = Promise.resolve().then(() => this.fn(arg, requests));
    this.running = run;
    const clear = () => { if (this.running === run) this.running = undefined; };
    run.then(clear, clear);
    return run;
  }
}
