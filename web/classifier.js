// The model side of the page, shared with scripts/parity.js: TF.js backend, model loading, preprocessing.
// TF.js is the project's own copy (node_modules, loaded by a <script> tag before this module): `window.tf`.
const tf = window.tf;
const WASM_DIR = new URL('node_modules/@tensorflow/tfjs-backend-wasm/dist/', import.meta.url).href;

// Largest decoded image accepted, in pixels: 8000x6000 phone photos (48 MP) pass, absurd ones get a message.
export const MAX_PIXELS = 100e6;

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

// Decode a File/Blob the way a phone photo is meant to be seen: EXIF orientation applied, and no colour
// profile conversion (the pipeline's decoders ignore ICC profiles too). Rejects on non-images/corrupt files.
export async function decodeImage(blob) {
  return createImageBitmap(blob, { imageOrientation: 'from-image', colorSpaceConversion: 'none',
    premultiplyAlpha: 'none' });
}

// The pipeline's default resize mode, "squash": the whole image scaled to size x size, aspect ratio NOT kept
// (no crop, no padding), with the pipeline's filters (lib/images.py, OpenCV): area averaging along an axis that
// shrinks (INTER_AREA), bilinear with half-pixel centres along one that grows (INTER_LINEAR), rounded to whole
// 0-255 values as the pipeline's PNGs are. (OpenCV's INTER_AREA on a mixed shrink/grow image differs slightly.)
// An image already size x size is used pixel for pixel. Returns raw RGB 0-255 floats, size*size*3, HWC.
export function squashToPixels(bitmap, size) {
  const { width, height } = bitmap;
  const canvas = document.createElement('canvas');
  canvas.width = width;
  canvas.height = height;
  const context = canvas.getContext('2d', { willReadFrequently: true });
  context.drawImage(bitmap, 0, 0);
  const rgba = context.getImageData(0, 0, width, height).data;
  canvas.width = 0;  // release the full-size canvas memory now
  const columns = resampleTable(width, size);
  const rows = resampleTable(height, size);
  const wide = new Float32Array(height * size * 3);  // horizontal pass: height x size
  for (let y = 0; y < height; y += 1) {
    for (let x = 0; x < size; x += 1) {
      const { indices, weights } = columns[x];
      let r = 0; let g = 0; let b = 0;
      for (let k = 0; k < indices.length; k += 1) {
        const source = (y * width + indices[k]) * 4;
        r += weights[k] * rgba[source]; g += weights[k] * rgba[source + 1]; b += weights[k] * rgba[source + 2];
      }
      const target = (y * size + x) * 3;
      wide[target] = r; wide[target + 1] = g; wide[target + 2] = b;
    }
  }
  const rgb = new Float32Array(size * size * 3);  // vertical pass: size x size
  for (let y = 0; y < size; y += 1) {
    const { indices, weights } = rows[y];
    for (let x = 0; x < size * 3; x += 1) {
      let value = 0;
      for (let k = 0; k < indices.length; k += 1) value += weights[k] * wide[indices[k] * size * 3 + x];
      rgb[y * size * 3 + x] = Math.min(255, Math.max(0, Math.round(value)));
    }
  }
  return rgb;
}

// For each of `target` output positions along an axis of `source` pixels: the source indices and weights.
function resampleTable(source, target) {
  const scale = source / target;
  const table = [];
  for (let i = 0; i < target; i += 1) {
    const indices = []; const weights = [];
    if (scale >= 1) {  // area: the fraction of each source pixel covered by [i*scale, (i+1)*scale)
      const start = i * scale; const end = start + scale;
      for (let s = Math.floor(start); s < Math.min(source, Math.ceil(end)); s += 1) {
        const overlap = Math.min(end, s + 1) - Math.max(start, s);
        if (overlap > 1e-9) { indices.push(s); weights.push(overlap / scale); }
      }
    } else {  // bilinear, pixel centres aligned, edges clamped
      const position = (i + 0.5) * scale - 0.5;
      let left = Math.floor(position); let fraction = position - left;
      if (left < 0) { left = 0; fraction = 0; }
      if (left >= source - 1) { left = source - 1; fraction = 0; }
      indices.push(left); weights.push(1 - fraction);
      if (fraction > 0) { indices.push(left + 1); weights.push(fraction); }
    }
    table.push({ indices, weights });
  }
  return table;
}
