// The page's judgement of a photo, as plain functions of numbers: limits, calibration, the "unsure" reasons, the
// screening flag, and how numbers are printed. Every metadata.json key used here is optional: an older
// metadata.json without it gives the behaviour the page had before that key existed.

// Refused before decoding (from the file's size and header):
export const MAX_FILE_BYTES = 50e6;
export const MAX_PIXELS = 80e6;  // lib/images.py MAX_PIXELS: the pipeline refuses larger images too
// Shortest side below which a photo is refused as too small to judge. The model sees input.size pixels a side
// (224 for the project's recipes; training photos are 600x450): below 32 px a lesion covers a few dozen pixels
// that the model would blow up 7x into a blur, so any answer would be a guess presented as a result. A thumbnail
// or an icon, not a photo.
export const MIN_SIDE = 32;
// Below this calibrated top probability the model is unsure (a 7-class model guessing gives ~0.14).
export const UNSURE_BELOW = 0.5;
// lib/export.py UNIFORM_STD_BELOW: the near-uniform floor when metadata.json has no input_check.
export const DEFAULT_UNIFORM_STD_BELOW = 4;

const STATISTIC_NAMES = { mean_red: 'average red', mean_green: 'average green', mean_blue: 'average blue',
  std: 'contrast' };

// ">99%", "<1%", otherwise one decimal ("36.7%"): 100.0% and 0.0% would claim a certainty no model has.
export function formatPercent(probability) {
  if (probability > 0.99) return '>99%';
  if (probability < 0.01) return '<1%';
  return `${(probability * 100).toFixed(1)}%`;
}

export function formatMegabytes(bytes) {
  const megabytes = bytes / 1e6;
  return `${megabytes >= 10 ? Math.round(megabytes) : Number(megabytes.toFixed(1))} MB`;
}

export function formatMegapixels(pixels) {
  return `${Math.round(pixels / 1e6)} megapixels`;
}

// Temperature scaling of softmax outputs, then the class biases b fitted on validation (metadata.class_bias, or
// null): p_i^(1/T) e^b_i / sum_j p_j^(1/T) e^b_j (T = 1 and no biases leave them as they are).
export function calibrate(probabilities, temperature = 1, classBias = null) {
  if (temperature === 1 && !classBias) return Array.from(probabilities);
  const scaled = Array.from(probabilities, (p, index) => p ** (1 / temperature) * Math.exp(classBias?.[index] ?? 0));
  const total = scaled.reduce((sum, value) => sum + value, 0);
  return scaled.map((value) => value / total);
}

// lib/export.py INPUT_STATISTICS of raw RGB 0-255 HWC pixels: per-channel means and the pooled std.
export function pixelStatistics(rgb) {
  const count = rgb.length / 3;
  const sums = [0, 0, 0]; const squares = [0, 0, 0];
  for (let index = 0; index < rgb.length; index += 1) {
    const value = rgb[index];
    sums[index % 3] += value; squares[index % 3] += value * value;
  }
  const means = sums.map((sum) => sum / count);
  const variances = squares.map((square, channel) => Math.max(0, square / count - means[channel] ** 2));
  return { mean_red: means[0], mean_green: means[1], mean_blue: means[2],
    std: Math.sqrt((variances[0] + variances[1] + variances[2]) / 3) };
}

export function uniformFloor(metadata) {
  return metadata.input_check?.uniform_std_below ?? DEFAULT_UNIFORM_STD_BELOW;
}

// The reasons not to rely on a result, each {reason, text}; empty when there is none.
export function unsureReasons(calibrated, statistics, metadata) {
  const top = Math.max(...calibrated);
  const reasons = [];
  if (top < UNSURE_BELOW) {
    reasons.push({ reason: 'low-confidence', text: `No class is clearly more likely than the others (top `
      + `${formatPercent(top)}, below ${formatPercent(UNSURE_BELOW)}).` });
  }
  const { ood } = metadata;
  if (ood && top < ood.threshold) {
    reasons.push({ reason: 'unlike-training-data', text: `The model is less confident than on `
      + `${Math.round((1 - ood.quantile) * 100)}% of its ${ood.fitted_on} photos (top ${formatPercent(top)}, `
      + `threshold ${formatPercent(ood.threshold)}): this photo may be unlike the photos it learnt from.` });
  }
  const outside = statisticsOutsideRanges(statistics, metadata.input_check);
  if (outside.length) {
    reasons.push({ reason: 'input-statistics', text: `Its ${outside.map(({ name, value, low, high }) => `${
      STATISTIC_NAMES[name] || name} (${value.toFixed(0)}; training photos ${low.toFixed(0)}-${high.toFixed(0)})`)
      .join(', ')} ${outside.length > 1 ? 'are' : 'is'} outside the range of the training photos.` });
  }
  return reasons;
}

function statisticsOutsideRanges(statistics, inputCheck) {
  if (!inputCheck) return [];
  return Object.entries(inputCheck.ranges).filter(([name, [low, high]]) => name in statistics
    && (statistics[name] < low || statistics[name] > high))
    .map(([name, [low, high]]) => ({ name, value: statistics[name], low, high }));
}

// The operating point's flag: {label, probability, threshold, targetSensitivity} when the calibrated probability
// of its class reaches the threshold; null otherwise or when metadata.json has no operating point.
export function screeningFlag(calibrated, metadata) {
  const point = metadata.operating_point;
  if (!point) return null;
  const probability = calibrated[metadata.classes.indexOf(point.class)];
  return probability >= point.threshold ? { label: point.class, probability, threshold: point.threshold,
    targetSensitivity: point.target_sensitivity } : null;
}
