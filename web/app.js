// The page: load the run's model + metadata from ./model/, take a photo (file, drop, camera), check it, show the
// top 3. A photo is refused from its header before decoding when too large or too small, decoded and resized in a
// worker (decode-worker.js) so the page stays responsive, refused when near-uniform, and the result carries the
// "unsure" reasons and the screening flag of checks.js. A photo chosen while another is analysed replaces it.
import { initBackend, loadModel, predictBatch, warmUp } from './classifier.js';
import * as checks from './checks.js';
import { SUPPORTED_FORMATS, readImageSize } from './image-header.js';
import { PhotoDecoder, Superseded } from './photo-decoder.js';

const MODEL_URL = new URL('model/model.json', document.baseURI).href;
const METADATA_URL = new URL('model/metadata.json', document.baseURI).href;
const PREVIEW_SIZE = 360;

const $ = (id) => document.getElementById(id);
const state = { model: null, metadata: null, job: 0, stream: null,
  decoder: new PhotoDecoder(new URL('decode-worker.js', import.meta.url)) };

// pageState: "ready", "busy", "done" (a result is shown) or "error" (a message instead of a result).
function setStatus(text, pageState) {
  $('status').textContent = text;
  $('status').classList.toggle('error', pageState === 'error');
  document.body.dataset.state = pageState;
}

class UserError extends Error {}

async function start() {
  try {
    if (typeof OffscreenCanvas === 'undefined' || typeof Worker === 'undefined') {
      throw new Error('this browser lacks OffscreenCanvas or Web Workers; use a current Chrome, Edge, Firefox or '
        + 'Safari');
    }
    const [metadata, backend] = await Promise.all([fetchMetadata(), initBackend('wasm')]);
    state.metadata = metadata;
    const model = await loadModel(MODEL_URL);
    await warmUp(model, metadata.input.size);
    state.model = model;
    $('disclaimer-long').textContent = metadata.disclaimer;
    $('model-info').textContent = describeModel(metadata, backend);
    const resizeMode = metadata.input.resize_mode || 'squash';
    setStatus(resizeMode === 'squash' ? 'Ready: choose, drop or take a photo.'
      : `Ready, but note: this model was trained on "${resizeMode}"-resized images and this page squashes `
        + 'the whole photo to a square, so results on non-square photos may differ from the pipeline\'s.', 'ready');
  } catch (error) {
    setStatus(`The model could not be loaded: ${error.message}. Check the page's address and reload it.`, 'error');
  }
}

async function fetchMetadata() {
  const response = await fetch(METADATA_URL);
  if (!response.ok) throw new Error(`no model metadata at ${METADATA_URL} (HTTP ${response.status})`);
  return response.json();
}

function describeModel(metadata, backend) {
  const metrics = metadata.test_metrics ? ' · test metrics in metadata.json' : '';
  const t = metadata.temperature ?? 1;  // three significant digits: T = 0.65, not 0.6500335445795037
  const temperature = t !== 1 ? `, probabilities calibrated (T = ${Number(t.toPrecision(3))})` : '';
  const biases = metadata.class_bias ? ', class biases fitted on validation' : '';
  const views = metadata.views?.count ?? 1;  // averaged inside the model, which gets one photo
  const averaged = views > 1 ? `, ${views} orientations of each photo averaged` : '';
  return `Model: run "${metadata.run_name}" (${metadata.date}), ${metadata.classes.length} classes, input `
    + `${metadata.input.size}×${metadata.input.size}, ${metadata.quantization === 'none' ? 'float32'
      : metadata.quantization} weights, TF.js ${tf.version.tfjs} on ${backend}${averaged}${temperature}${biases}${metrics}.`;
}

async function classifyFile(file) {
  if (!state.model) {
    setStatus('The model is not loaded yet: wait for "Ready", then choose the photo again.', 'error');
    return;
  }
  state.job += 1;
  const job = state.job;  // a later photo increments it: this one's outcome is then dropped
  $('result').hidden = true;
  setStatus(`Reading "${file.name}"…`, 'busy');
  let decoded = null;
  try {
    const { width, height } = await checkBeforeDecoding(file);
    if (job !== state.job) return;
    setStatus(`Analysing "${file.name}" (${width}×${height})…`, 'busy');
    decoded = await decodeOffMainThread(file);
    const statistics = checks.pixelStatistics(decoded.pixels);
    if (statistics.std < checks.uniformFloor(state.metadata)) throw new UserError(explainUniform(file));
    const size = state.metadata.input.size;
    const [probabilities] = await predictBatch(state.model, decoded.pixels, [1, size, size, 3]);
    if (job === state.job) showResult(file.name, decoded, probabilities, statistics);
  } catch (error) {
    if (error instanceof Superseded || job !== state.job) return;
    setStatus(error instanceof UserError ? error.message : `Something went wrong: ${error.message}. Reload the `
      + 'page and try again, or try another photo.', 'error');
  } finally {
    if (decoded) decoded.preview.close();
  }
}

// Size limits from the file and its header alone, before any pixel is decoded. Returns {width, height}.
async function checkBeforeDecoding(file) {
  if (file.size > checks.MAX_FILE_BYTES) {
    throw new UserError(`"${file.name}" is ${checks.formatMegabytes(file.size)}; choose a photo under `
      + `${checks.formatMegabytes(checks.MAX_FILE_BYTES)}.`);
  }
  const header = await readImageSize(file);
  if (!header) throw new UserError(explainUnknownFormat(file));
  if (!header.width) throw new UserError(explainDecodeFailure(file));
  const { width, height } = header;
  if (width * height > checks.MAX_PIXELS) throw new UserError(explainTooLarge(file, width, height));
  if (Math.min(width, height) < checks.MIN_SIDE) {
    throw new UserError(`"${file.name}" is only ${width}×${height} pixels: too small to judge (the shortest side `
      + `must be at least ${checks.MIN_SIDE} pixels). Choose a larger photo, taken closer to the lesion.`);
  }
  return header;
}

async function decodeOffMainThread(file) {
  const reply = await state.decoder.decode({ file, size: state.metadata.input.size, maxPixels: checks.MAX_PIXELS,
    previewSide: PREVIEW_SIZE });
  if (reply.ok) return reply;
  if (reply.reason === 'decode') throw new UserError(explainDecodeFailure(file));
  if (reply.reason === 'too-large') throw new UserError(explainTooLarge(file, reply.width, reply.height));
  throw new Error(`the photo could not be resized (${reply.message})`);
}

function explainUnknownFormat(file) {
  if (file.type && !file.type.startsWith('image/')) {
    return `"${file.name}" is not an image (${file.type}). Choose a JPEG or PNG photo.`;
  }
  return `"${file.name}" is not a ${SUPPORTED_FORMATS} image${file.type ? ` (it is ${file.type})` : ''}, the `
    + 'formats this page can check before opening. Convert it to JPEG or PNG, or choose another photo.';
}

function explainDecodeFailure(file) {
  return `"${file.name}" could not be read as an image: it may be corrupt or in an unsupported format. `
    + 'Choose a JPEG or PNG photo.';
}

function explainTooLarge(file, width, height) {
  return `"${file.name}" is ${width}×${height} pixels (${checks.formatMegapixels(width * height)}), too large to `
    + `analyse here (the limit is ${checks.formatMegapixels(checks.MAX_PIXELS)}). Choose a smaller photo or `
    + 'resize it first.';
}

function explainUniform(file) {
  return `"${file.name}" is almost a single colour (like a black or blank picture): there is no lesion to `
    + 'analyse. Take a photo of the lesion in good light, centred and in focus.';
}

function showResult(name, decoded, probabilities, statistics) {
  const { metadata } = state;
  const calibrated = checks.calibrate(probabilities, metadata.temperature ?? 1, metadata.class_bias);
  drawPreview(decoded);
  showRanking(probabilities, calibrated);
  showScreeningFlag(checks.screeningFlag(calibrated, metadata));
  showUnsureReasons(checks.unsureReasons(calibrated, statistics, metadata));
  $('result').hidden = false;
  setStatus(`Result for "${name}" (${decoded.width}×${decoded.height}, resized to `
    + `${metadata.input.size}×${metadata.input.size}).`, 'done');
}

function drawPreview({ preview, width }) {
  const canvas = $('preview');
  canvas.width = preview.width;
  canvas.height = preview.height;
  // small images are shown enlarged, pixelated rather than blurred, so the user sees what the model sees
  canvas.style.width = `${Math.max(preview.width, Math.min(PREVIEW_SIZE, width * 8))}px`;
  canvas.style.imageRendering = preview.width === width ? 'pixelated' : 'auto';
  canvas.getContext('2d').drawImage(preview, 0, 0);
}

function longName(label) {
  const name = state.metadata.long_names && state.metadata.long_names[label];
  return name && name !== label ? `${name} (${label})` : label;
}

function showRanking(raw, calibrated) {
  const ranked = state.metadata.classes.map((label, index) => ({ label, probability: calibrated[index],
    raw: raw[index] })).sort((a, b) => b.probability - a.probability).slice(0, 3);
  $('predictions').replaceChildren(...ranked.map(({ label, probability, raw: rawProbability }) => {
    const item = document.createElement('li');
    item.className = 'prediction';
    Object.assign(item.dataset, { label, probability: String(probability), rawProbability: String(rawProbability) });
    const name = document.createElement('span');
    name.className = 'class-name';
    name.textContent = longName(label);
    const percent = document.createElement('span');
    percent.className = 'probability';
    percent.textContent = checks.formatPercent(probability);
    const bar = document.createElement('div');
    bar.className = 'bar';
    bar.setAttribute('aria-hidden', 'true');
    const fill = document.createElement('span');
    fill.style.width = `${Math.max(0, Math.min(100, probability * 100)).toFixed(1)}%`;
    bar.append(fill);
    item.append(name, ' ', percent, bar);
    return item;
  }));
}

function showScreeningFlag(flag) {
  $('screening').hidden = !flag;
  if (!flag) return;
  $('screening').textContent = `This photo resembles ${longName(flag.label)} above the screening threshold: `
    + `${checks.formatPercent(flag.probability)}, at or above ${checks.formatPercent(flag.threshold)}, a threshold `
    + `set to flag about ${Math.round(flag.targetSensitivity * 100)}% of such lesions. Show this lesion to a doctor `
    + 'or dermatologist.';
}

function showUnsureReasons(reasons) {
  $('unsure').hidden = reasons.length === 0;
  $('unsure-reasons').replaceChildren(...reasons.map(({ reason, text }) => {
    const item = document.createElement('li');
    item.dataset.reason = reason;
    item.textContent = text;
    return item;
  }));
}

function firstFile(fileList) {
  return fileList && fileList.length ? fileList[0] : null;
}

function wireInputs() {
  for (const id of ['file-input', 'capture-input']) {
    $(id).addEventListener('change', (event) => {
      const file = firstFile(event.target.files);
      if (file) classifyFile(file);
      event.target.value = '';  // choosing the same file again should classify it again
    });
  }
  $('choose-button').addEventListener('click', () => $('file-input').click());
  $('capture-button').addEventListener('click', () => $('capture-input').click());
  const zone = $('drop-zone');
  zone.addEventListener('keydown', (event) => {
    if (event.target !== zone || (event.key !== 'Enter' && event.key !== ' ')) return;
    event.preventDefault();  // Space would scroll the page
    $('file-input').click();
  });
  zone.addEventListener('dragover', (event) => { event.preventDefault(); zone.classList.add('dragging'); });
  zone.addEventListener('dragleave', () => zone.classList.remove('dragging'));
  zone.addEventListener('drop', (event) => {
    event.preventDefault();
    zone.classList.remove('dragging');
    const file = firstFile(event.dataTransfer.files);
    if (file) classifyFile(file);
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
    $('snap-button').focus();
  } catch (error) {
    setStatus(`The camera is not available: ${error.message}. Choose a photo instead.`, 'error');
  }
}

function closeCamera() {
  if (state.stream) state.stream.getTracks().forEach((track) => track.stop());
  state.stream = null;
  $('camera').hidden = true;
}

async function snapCamera() {
  const video = $('camera-video');
  if (!video.videoWidth) {
    setStatus('The camera has not shown a picture yet: wait a moment, then press "Classify this frame" again.',
      'error');
    return;
  }
  const canvas = new OffscreenCanvas(video.videoWidth, video.videoHeight);
  canvas.getContext('2d').drawImage(video, 0, 0);
  const blob = await canvas.convertToBlob({ type: 'image/png' });
  closeCamera();
  classifyFile(new File([blob], 'camera.png', { type: 'image/png' }));
}

wireInputs();
start();
