// Median latency of one image through /model/model.json with the page's own backend and model loading
// (web/classifier.js). Query: backend, runs, warmup. Input: a fixed pseudo-random raw RGB 0-255 image.
import { initBackend, loadModel } from '../classifier.js';

const tf = window.tf;

async function run() {
  const query = new URLSearchParams(location.search);
  const runs = Number(query.get('runs') || 20);
  const warmup = Number(query.get('warmup') || 3);
  const backend = await initBackend(query.get('backend') || 'wasm');
  let started = performance.now();
  const model = await loadModel(new URL('../model/model.json', location.href).href);
  const loadMs = performance.now() - started;
  const size = model.inputs[0].shape[1];
  const pixels = new Float32Array(size * size * 3);
  let seed = 12345;
  for (let index = 0; index < pixels.length; index += 1) {
    seed = (seed * 1103515245 + 12345) % 2147483648;
    pixels[index] = seed % 256;
  }
  const input = tf.tensor4d(pixels, [1, size, size, 3], 'float32');
  const once = async () => {
    const begin = performance.now();
    const output = model.predict(input);
    await output.data();  // wait for the result, as the page does
    output.dispose();
    return performance.now() - begin;
  };
  const firstMs = await once();
  for (let index = 1; index < warmup; index += 1) await once();
  const times = [];
  for (let index = 0; index < runs; index += 1) times.push(await once());
  input.dispose();
  const sorted = [...times].sort((a, b) => a - b);
  return {
    backend, size, loadMs, firstMs, times, medianMs: sorted[Math.floor(sorted.length / 2)],
    minMs: sorted[0], maxMs: sorted[sorted.length - 1],
    simd: backend === 'wasm' ? await tf.env().getAsync('WASM_HAS_SIMD_SUPPORT') : null,
    threads: backend === 'wasm' ? await tf.env().getAsync('WASM_HAS_MULTITHREAD_SUPPORT') : null,
    tfjs: tf.version.tfjs,
  };
}

run().then((result) => { window.latencyResult = result; },
  (error) => { window.latencyResult = { error: String(error && error.stack || error) }; });
