// Feed /parity/images.bin (float32 NHWC, raw RGB 0-255, shape in /parity/images.json) to /model/model.json.
import { initBackend, loadModel, predictBatch } from '../classifier.js';

// Images a call to the model gets: a model averaging 8 views runs 8x as many inside, and 128 at once (the page's
// share) would hold ~1 GB of MobileNet activations.
const CHUNK = 16;

async function run() {
  const backend = await initBackend(new URLSearchParams(location.search).get('backend') || 'wasm');
  const model = await loadModel(new URL('../model/model.json', location.href).href);
  const { shape } = await (await fetch('../parity/images.json')).json();
  const data = new Float32Array(await (await fetch('../parity/images.bin')).arrayBuffer());
  const started = performance.now();
  const [count, ...imageShape] = shape;
  const imageLength = imageShape.reduce((a, b) => a * b, 1);
  const probabilities = [];
  for (let start = 0; start < count; start += CHUNK) {
    const end = Math.min(count, start + CHUNK);
    const chunk = data.subarray(start * imageLength, end * imageLength);
    probabilities.push(...await predictBatch(model, chunk, [end - start, ...imageShape]));
  }
  return { backend, probabilities, milliseconds: performance.now() - started };
}

run().then((result) => { window.parityResult = result; },
  (error) => { window.parityResult = { error: String(error && error.stack || error) }; });
