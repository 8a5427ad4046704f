// Feed /parity/images.bin (float32 NHWC, raw RGB 0-255, shape in /parity/images.json) to /model/model.json.
import { initBackend, loadModel, predictBatch } from '../classifier.js';

async function run() {
  const backend = await initBackend(new URLSearchParams(location.search).get('backend') || 'wasm');
  const model = await loadModel(new URL('../model/model.json', location.href).href);
  const { shape } = await (await fetch('../parity/images.json')).json();
  const data = new Float32Array(await (await fetch('../parity/images.bin')).arrayBuffer());
  const started = performance.now();
  const probabilities = await predictBatch(model, data, shape);
  return { backend, probabilities, milliseconds: performance.now() - started };
}

run().then((result) => { window.parityResult = result; },
  (error) => { window.parityResult = { error: String(error && error.stack || error) }; });
