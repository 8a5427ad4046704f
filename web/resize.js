// The pipeline's default resize mode, "squash", for the decoding worker (decode-worker.js): the whole image scaled
// to size x size, aspect ratio NOT kept (no crop, no padding), with the pipeline's filters (lib/images.py, OpenCV):
// area averaging along an axis that shrinks (INTER_AREA), bilinear with half-pixel centres along one that grows
// (INTER_LINEAR), rounded to whole 0-255 values as the pipeline's PNGs are. (OpenCV's INTER_AREA on a mixed
// shrink/grow image differs slightly.) An image already size x size is used pixel for pixel.

// The image is read in horizontal strips of at most this many pixels (16 MB of RGBA): an 8000x6000 photo never has
// a full-size canvas and ImageData (2 x 192 MB) besides its decoded bitmap. Strips change no value: the horizontal
// pass works row by row.
export const STRIP_PIXELS = 4e6;

// bitmap: an ImageBitmap (decoded, orientation applied). Returns raw RGB 0-255 floats, size*size*3, HWC.
export function squashToPixels(bitmap, size, stripPixels = STRIP_PIXELS) {
  const { width, height } = bitmap;
  const stripRows = Math.max(1, Math.min(height, Math.floor(stripPixels / width)));
  const canvas = new OffscreenCanvas(width, stripRows);
  const context = canvas.getContext('2d', { willReadFrequently: true });
  const columns = resampleTable(width, size);
  const wide = new Float32Array(height * size * 3);  // horizontal pass: height x size
  for (let top = 0; top < height; top += stripRows) {
    const rows = Math.min(stripRows, height - top);
    context.clearRect(0, 0, width, stripRows);
    context.drawImage(bitmap, 0, top, width, rows, 0, 0, width, rows);  // 1:1 copy of the strip
    shrinkRows(context.getImageData(0, 0, width, rows).data, width, rows, columns, wide, top * size * 3);
  }
  return verticalPass(wide, resampleTable(height, size), size);
}

// Resample each of `rows` RGBA rows of `width` pixels to columns.length RGB values, written to `wide` at `start`.
function shrinkRows(rgba, width, rows, columns, wide, start) {
  const size = columns.length;
  for (let y = 0; y < rows; y += 1) {
    for (let x = 0; x < size; x += 1) {
      const { indices, weights } = columns[x];
      let r = 0; let g = 0; let b = 0;
      for (let k = 0; k < indices.length; k += 1) {
        const source = (y * width + indices[k]) * 4;
        r += weights[k] * rgba[source]; g += weights[k] * rgba[source + 1]; b += weights[k] * rgba[source + 2];
      }
      const target = start + (y * size + x) * 3;
      wide[target] = r; wide[target + 1] = g; wide[target + 2] = b;
    }
  }
}

function verticalPass(wide, rows, size) {
  const rgb = new Float32Array(size * size * 3);
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
