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
