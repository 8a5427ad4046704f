// The page: load the run's model + metadata from ./model/, take a photo (file, drop, camera), show the top 3.
import { MAX_PIXELS, decodeImage, initBackend, loadModel, predictBatch, squashToPixels } from './classifier.js';

const MODEL_URL = new URL('model/model.json', document.baseURI).href;
const METADATA_URL = new URL('model/metadata.json', document.baseURI).href;
const MAX_FILE_BYTES = 50 * 1024 * 1024;
// Below this top probability the page says the model is unsure (a 7-class model guessing gives ~0.14).
const UNSURE_BELOW = 0.5;
const PREVIEW_SIZE = 360;

const $ = (id) => document.getElementById(id);
const state = { model: null, metadata: null, busy: false, stream: null };

function setStatus(text, isError = false) {
  $('status').textContent = text;
  $('status').classList.toggle('error', isError);
  document.body.dataset.state = isError ? 'error' : (state.busy ? 'busy' : 'ready');
}

async function start() {
  try {
    const [metadata, backend] = await Promise.all([
      fetch(METADATA_URL).then((response) => {
        if (!response.ok) throw new Error(`no model metadata at ${METADATA_URL} (HTTP ${response.status})`);
        return response.json();
      }),
      initBackend('wasm'),
    ]);
    state.metadata = metadata;
    state.model = await loadModel(MODEL_URL);
    $('disclaimer-long').textContent = metadata.disclaimer;
    const metrics = metadata.test_metrics ? ' · test metrics in metadata.json' : '';
    $('model-info').textContent = `Model: run "${metadata.run_name}" (${metadata.date}), ${metadata.classes.length} `
      + `classes, input ${metadata.input.size}×${metadata.input.size}, ${metadata.quantization === 'none' ? 'float32' : metadata.quantization} weights, `
      + `TF.js ${tf.version.tfjs} on ${backend}${metrics}.`;
    const resizeMode = metadata.input.resize_mode || 'squash';
    setStatus(resizeMode === 'squash' ? 'Ready: choose, drop or take a photo.'
      : `Ready, but note: this model was trained on "${resizeMode}"-resized images and this page squashes `
        + 'the whole photo to a square, so results on non-square photos may differ from the pipeline\'s.');
  } catch (error) {
    setStatus(`The model could not be loaded: ${error.message}`, true);
  }
}

function explainDecodeFailure(file) {
  if (file.type && !file.type.startsWith('image/')) {
    return `"${file.name}" is not an image (${file.type}). Choose a JPEG or PNG photo.`;
  }
  return `"${file.name}" could not be read as an image: it may be corrupt or in an unsupported format. `
    + 'Choose a JPEG or PNG photo.';
}

async function classifyBlob(file) {
  if (!state.model) { setStatus('The model is not loaded yet.', true); return; }
  if (state.busy) return;
  state.busy = true;
  $('result').hidden = true;
  setStatus(`Reading "${file.name}"…`);
  let bitmap = null;
  try {
    if (file.size > MAX_FILE_BYTES) {
      throw new UserError(`"${file.name}" is ${(file.size / 1e6).toFixed(0)} MB; choose a photo under `
        + `${MAX_FILE_BYTES / 1e6} MB.`);
    }
    bitmap = await decodeImage(file).catch(() => { throw new UserError(explainDecodeFailure(file)); });
    if (bitmap.width * bitmap.height > MAX_PIXELS) {
      throw new UserError(`"${file.name}" is ${bitmap.width}×${bitmap.height} pixels, too large to analyse here; `
        + 'choose a smaller photo.');
    }
    setStatus('Analysing…');
    const size = state.metadata.input.size;
    const pixels = squashToPixels(bitmap, size);
    drawPreview(bitmap);
    const [probabilities] = await predictBatch(state.model, pixels, [1, size, size, 3]);
    showPrediction(probabilities, bitmap, file.name);
  } catch (error) {
    setStatus(error instanceof UserError ? error.message : `Something went wrong: ${error.message}`, true);
  } finally {
    if (bitmap) bitmap.close();
    state.busy = false;
    if (!$('status').classList.contains('error')) document.body.dataset.state = 'done';
  }
}

class UserError extends Error {}

function drawPreview(bitmap) {
  const scale = Math.min(1, PREVIEW_SIZE / Math.max(bitmap.width, bitmap.height));
  const canvas = $('preview');
  canvas.width = Math.max(1, Math.round(bitmap.width * scale));
  canvas.height = Math.max(1, Math.round(bitmap.height * scale));
  // small images are shown enlarged, pixelated rather than blurred, so the user sees what the model sees
  canvas.style.width = `${Math.max(canvas.width, Math.min(PREVIEW_SIZE, bitmap.width * 8))}px`;
  canvas.style.imageRendering = scale === 1 ? 'pixelated' : 'auto';
  const context = canvas.getContext('2d');
  context.imageSmoothingQuality = 'high';
  context.drawImage(bitmap, 0, 0, canvas.width, canvas.height);
}

function showPrediction(probabilities, bitmap, name) {
  const { classes, long_names: longNames } = state.metadata;
  const ranked = classes.map((label, index) => ({ label, probability: probabilities[index] }))
    .sort((a, b) => b.probability - a.probability).slice(0, 3);
  const list = $('predictions');
  list.replaceChildren(...ranked.map(({ label, probability }) => {
    const item = document.createElement('li');
    item.className = 'prediction';
    item.dataset.label = label;
    item.dataset.probability = String(probability);
    const title = document.createElement('div');
    const className = document.createElement('span');
    className.className = 'class-name';
    className.textContent = `${label}: ${(probability * 100).toFixed(1)}%`;
    const longName = document.createElement('span');
    longName.className = 'long-name';
    longName.textContent = longNames && longNames[label] ? ` (${longNames[label]})` : '';
    title.append(className, longName);
    const bar = document.createElement('div');
    bar.className = 'bar';
    const fill = document.createElement('span');
    fill.style.width = `${Math.max(0, Math.min(100, probability * 100)).toFixed(1)}%`;
    bar.append(fill);
    item.append(title, bar);
    return item;
  }));
  $('unsure').hidden = ranked[0].probability >= UNSURE_BELOW;
  $('result').hidden = false;
  setStatus(`Result for "${name}" (${bitmap.width}×${bitmap.height}, resized to `
    + `${state.metadata.input.size}×${state.metadata.input.size}).`);
}

function firstFile(fileList) {
  return fileList && fileList.length ? fileList[0] : null;
}

function wireInputs() {
  for (const id of ['file-input', 'capture-input']) {
    $(id).addEventListener('change', (event) => {
      const file = firstFile(event.target.files);
      if (file) classifyBlob(file);
      event.target.value = '';  // choosing the same file again should classify it again
    });
  }
  const zone = $('drop-zone');
  zone.addEventListener('dragover', (event) => { event.preventDefault(); zone.classList.add('dragging'); });
  zone.addEventListener('dragleave', () => zone.classList.remove('dragging'));
  zone.addEventListener('drop', (event) => {
    event.preventDefault();
    zone.classList.remove('dragging');
    const file = firstFile(event.dataTransfer.files);
    if (file) classifyBlob(file);
  });
  // the capture input opens the camera on phones; on desktops a live camera preview needs getUserMedia
  const hasLiveCamera = Boolean(navigator.mediaDevices && navigator.mediaDevices.getUserMedia);
  $('camera-button').hidden = !hasLiveCamera;
  $('camera-button').addEventListener('click', openCamera);
  $('camera-close').addEventListener('click', closeCamera);
  $('snap-button').addEventListener('click', snapCamera);
}

async function openCamera() {
  try {
    state.stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: 'environment' } });
    $('camera-video').srcObject = state.stream;
    $('camera').hidden = false;
  } catch (error) {
    setStatus(`The camera is not available: ${error.message}. Choose a photo instead.`, true);
  }
}

function closeCamera() {
  if (state.stream) state.stream.getTracks().forEach((track) => track.stop());
  state.stream = null;
  $('camera').hidden = true;
}

async function snapCamera() {
  const video = $('camera-video');
  if (!video.videoWidth) return;
  const canvas = new OffscreenCanvas(video.videoWidth, video.videoHeight);
  canvas.getContext('2d').drawImage(video, 0, 0);
  const blob = await canvas.convertToBlob({ type: 'image/png' });
  closeCamera();
  classifyBlob(new File([blob], 'camera.png', { type: 'image/png' }));
}

wireInputs();
start();
