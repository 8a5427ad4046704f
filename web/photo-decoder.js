// The page's side of decode-worker.js: one photo at a time, and the latest wins. Choosing a new photo while one is
// decoded stops the worker (an 8000x6000 decode would otherwise finish first) and rejects the earlier promise
// with Superseded, so its result is never shown over the new one.
export class Superseded extends Error {}

export class PhotoDecoder {
  constructor(workerUrl) {
    this.workerUrl = workerUrl;
    this.worker = null;
    this.pending = null;
  }

  // Resolves to decode-worker.js' reply; rejects with Superseded when decode() is called again before the reply.
  decode(message) {
    this.cancel();
    if (!this.worker) this.worker = this.startWorker();
    return new Promise((resolve, reject) => {
      this.pending = { resolve, reject };
      this.worker.postMessage(message);
    });
  }

  cancel() {
    if (!this.pending) return;
    this.worker.terminate();
    this.worker = null;
    this.settle('reject', new Superseded('a newer photo was chosen'));
  }

  startWorker() {
    const worker = new Worker(this.workerUrl, { type: 'module' });
    worker.addEventListener('message', (event) => this.settle('resolve', event.data));
    worker.addEventListener('error', (event) => {
      event.preventDefault();
      this.worker = null;
      worker.terminate();
      this.settle('reject', new Error(`the decoding worker failed: ${event.message || 'it could not start'}`));
    });
    return worker;
  }

  settle(how, value) {
    const { pending } = this;
    this.pending = null;
    if (pending) pending[how](value);
  }
}
