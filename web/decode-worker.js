// Decode and resize a photo off the page's main thread, so that an 8000x6000 photo does not freeze the page.
// Message in: {file, size, maxPixels, previewSide}. Message out: {ok: true, width, height, pixels (Float32Array,
// size*size*3 raw RGB 0-255, HWC), preview (ImageBitmap, longest side <= previewSide)} or {ok: false, reason:
// "decode" | "too-large" | "failed", message, width?, height?}.
import { squashToPixels } from './resize.js';

// EXIF orientation applied and no colour-profile conversion: the pipeline's decoders ignore ICC profiles too.
const DECODE_OPTIONS = { imageOrientation: 'from-image', colorSpaceConversion: 'none', premultiplyAlpha: 'none' };

self.addEventListener('message', async ({ data: { file, size, maxPixels, previewSide } }) => {
  let bitmap;
  try {
    bitmap = await createImageBitmap(file, DECODE_OPTIONS);
  } catch (error) {
    self.postMessage({ ok: false, reason: 'decode', message: String(error && error.message || error) });
    return;
  }
  try {
    const { width, height } = bitmap;
    if (width * height > maxPixels) {  // the header said otherwise: a lying or unusual file
      self.postMessage({ ok: false, reason: 'too-large', message: `${width}x${height} pixels`, width, height });
      return;
    }
    const pixels = squashToPixels(bitmap, size);
    const preview = previewOf(bitmap, previewSide);
    self.postMessage({ ok: true, width, height, pixels, preview }, [pixels.buffer, preview]);
  } catch (error) {
    self.postMessage({ ok: false, reason: 'failed', message: String(error && error.message || error) });
  } finally {
    bitmap.close();
  }
});

function previewOf(bitmap, previewSide) {
  const scale = Math.min(1, previewSide / Math.max(bitmap.width, bitmap.height));
  const canvas = new OffscreenCanvas(Math.max(1, Math.round(bitmap.width * scale)),
    Math.max(1, Math.round(bitmap.height * scale)));
  const context = canvas.getContext('2d');
  context.imageSmoothingQuality = 'high';
  context.drawImage(bitmap, 0, 0, canvas.width, canvas.height);
  return canvas.transferToImageBitmap();
}
