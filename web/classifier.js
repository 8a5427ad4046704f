// The model side of the page, shared with scripts/parity.js: TF.js backend and model loading, prediction.
// (Decoding and resizing run in a worker: decode-worker.js, resize.js.)
// TF.js is the project's own copy (node_modules, loaded by a <script> tag before this module): `window.tf`.
const tf = window.tf;
const WASM_DIR = new URL('node_modules/@tensorflow/tfjs-backend-wasm/dist/', import.meta.url).href;

export async function initBackend(preferred = 'wasm') {
  if (tf.wasm) tf.wasm.setWasmPaths(WASM_DIR);
  for (const name of [...new Set([preferred, 'wasm', 'cpu'])]) {
    try {
      if (tf.findBackendFactory(name) && await tf.setBackend(name)) {
        await tf.ready();
        return tf.getBackend();
      }
    } catch (error) {
      console.warn(`TF.js backend ${name} unavailable: ${error}`);
    }
  }
  throw new Error('no TF.js backend could start (tried wasm and cpu)');
}

export async function loadModel(modelUrl) {
  return tf.loadGraphModel(modelUrl);
}

// data: Float32Array of raw RGB 0-255, NHWC `shape`; returns one probability array per image.
export async function predictBatch(model, data, shape) {
  const output = tf.tidy(() => model.predict(tf.tensor4d(data, shape, 'float32')));
  try {
    return await output.array();
  } finally {
    output.dispose();
  }
}

// One prediction on a blank image. The first call sets up the backend's kernels (a main-thread task of 100-300 ms
// for MobileNet on wasm): made while the page loads, it stays off the user's first photo.
export async function warmUp(model, size) {
  await predictBatch(model, new Float32Array(size * size * 3), [1, size, size, 3]);
}
