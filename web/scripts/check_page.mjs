// Open the page in headless Chromium and use it as a user would; report what it shows, step by step.
// argv[2]: {"url": page URL, "chromium": path, "timeout_ms": per step, "steps": [step, ...]}, each step one of
//   {"name", "upload": file, "screenshot": optional PNG path}: choose `upload` through the page's file input
//   {"name", "upload": file, "then_upload": file, "settle_ms": n}: choose a second file while the first is analysed
//   {"name", "keyboard": file}: Tab through the page, press Enter/Space on each control, choose `keyboard` with the
//       chooser that "Choose a photo" opened (make it the first step: Tab starts from the top of the page)
//   {"name", "axe": true}: run axe-core (web/node_modules, served from the page's origin so its CSP holds) now
// Prints {"loaded", "steps": {name: report}, "foreignRequests", "log"}. Upload reports carry the page's state and
// text, and how the page behaved meanwhile: elapsedMs (choice to result or message), maxFrameGapMs (longest time
// without an animation frame), longestTaskMs (PerformanceObserver 'longtask') and paintedStatuses (status texts
// that were on screen at some frame).
import { parseArguments, withPage } from './chromium.mjs';
import { behaviourSince, installProbe, markStart, waitForState } from './page_probe.mjs';

const args = parseArguments();
const timeout = args.timeout_ms || 60000;
const origin = new URL(args.url).origin;
// The controls that must open the file chooser from the keyboard, and the key pressed on each.
const KEYBOARD_TARGETS = [['drop-zone', 'Enter'], ['drop-zone', 'Space'], ['choose-button', 'Enter'],
  ['capture-button', 'Enter']];

async function readPage(page) {
  return page.evaluate(() => {
    const shown = (id) => Boolean(document.getElementById(id)) && !document.getElementById(id).hidden;
    return {
      state: document.body.dataset.state,
      status: document.getElementById('status').textContent,
      resultShown: shown('result'),
      unsureShown: shown('unsure'),
      unsureReasons: [...document.querySelectorAll('#unsure [data-reason]')].map((item) => item.dataset.reason),
      unsureText: document.getElementById('unsure').textContent.replace(/\s+/g, ' ').trim(),
      screening: shown('screening') ? document.getElementById('screening').textContent : null,
      predictions: [...document.querySelectorAll('#predictions li')].map((item) => ({
        label: item.dataset.label, probability: Number(item.dataset.probability),
        rawProbability: item.dataset.rawProbability === undefined ? null : Number(item.dataset.rawProbability),
        text: item.textContent.replace(/\s+/g, ' ').trim(),
      })),
      modelInfo: document.getElementById('model-info').textContent,
      disclaimer: document.getElementById('disclaimer').textContent,
    };
  });
}

async function uploadStep(page, step) {
  const started = await markStart(page);
  await page.setInputFiles('#file-input', step.upload);
  if (step.then_upload) {
    await waitForState(page, timeout, ['busy']);
    await page.setInputFiles('#file-input', step.then_upload);
  }
  await waitForState(page, timeout, ['done', 'error']);
  const behaviour = await behaviourSince(page, started);
  if (step.settle_ms) await page.waitForTimeout(step.settle_ms);  // an earlier photo's late result would show now
  if (step.screenshot) await page.screenshot({ path: step.screenshot, fullPage: true });
  return { ...behaviour, ...(await readPage(page)) };
}

async function describeFocus(page) {
  return page.evaluate(() => {
    const element = document.activeElement;
    const style = getComputedStyle(element);
    return { id: element.id, tag: element.tagName.toLowerCase(), focusVisible: element.matches(':focus-visible'),
      outline: `${style.outlineStyle} ${style.outlineWidth}`,
      outlineShown: style.outlineStyle !== 'none' && parseFloat(style.outlineWidth) > 0 };
  });
}

// Every file chooser the page opens, in order. One listener for the whole session: Playwright intercepts choosers
// only while a listener exists, and switching that on per key press races with the press (a chooser then goes
// unseen).
const openedChoosers = [];

async function chooserAfter(page, count) {
  const deadline = Date.now() + 3000;
  while (openedChoosers.length === count && Date.now() < deadline) await page.waitForTimeout(20);
  return openedChoosers[count] || null;
}

// Tab from the top of the page through every control (make it the first step, while the focus navigation starts at
// the top); on each KEYBOARD_TARGETS control press its key and see whether a file chooser opens. "Choose a photo"'s
// chooser then chooses `keyboard`.
async function keyboardStep(page, step) {
  const order = [];
  const choosers = [];
  let chooserForUpload = null;
  for (let presses = 1; presses <= 15; presses += 1) {
    await page.keyboard.press('Tab');
    const focused = await describeFocus(page);
    if (focused.tag === 'body' || order.some((earlier) => earlier.id === focused.id && earlier.tag === focused.tag)) {
      break;
    }
    order.push(focused);
    for (const [id, key] of KEYBOARD_TARGETS.filter(([target]) => target === focused.id)) {
      const count = openedChoosers.length;
      await page.keyboard.press(key);
      const chooser = await chooserAfter(page, count);
      choosers.push({ id, key, opened: Boolean(chooser) });
      if (chooser && id === 'choose-button') chooserForUpload = chooser;
    }
  }
  let upload = null;
  if (chooserForUpload) {
    await markStart(page);
    await chooserForUpload.setFiles(step.keyboard);
    await waitForState(page, timeout, ['done', 'error']);
    upload = await readPage(page);
  }
  return { order, choosers, upload };
}

async function axeStep(page) {
  if (!(await page.evaluate(() => Boolean(window.axe)))) {
    const url = new URL('node_modules/axe-core/axe.min.js', args.url).href;
    await page.addScriptTag({ url }).catch((error) => {
      throw new Error(`axe-core did not load from ${url} (${error.message}): run \`npm ci\` in web/`);
    });
  }
  return page.evaluate(async () => {
    const { violations } = await window.axe.run(document, { resultTypes: ['violations'] });
    return { violations: violations.map((violation) => ({ id: violation.id, impact: violation.impact,
      help: violation.help, nodes: violation.nodes.map((node) => node.target.join(' ')) })) };
  });
}

async function runStep(page, step) {
  if (step.axe) return axeStep(page);
  if (step.keyboard) return keyboardStep(page, step);
  return uploadStep(page, step);
}

const result = await withPage(args.chromium, async (page, log) => {
  const foreign = [];
  page.on('request', (request) => {
    const url = new URL(request.url());
    if (!['data:', 'blob:'].includes(url.protocol) && url.origin !== origin) foreign.push(request.url());
  });
  page.on('filechooser', (chooser) => openedChoosers.push(chooser));
  await page.addInitScript(installProbe);
  await page.goto(args.url);
  await waitForState(page, timeout, ['ready', 'error']);
  const loaded = await readPage(page);
  const steps = {};
  for (const step of args.steps || []) {
    steps[step.name] = await runStep(page, step).catch((error) => ({ failed: String(error.message || error),
      ...(step.upload ? { state: 'no outcome' } : {}) }));
  }
  return { loaded, steps, foreignRequests: foreign, log };
});
console.log(JSON.stringify(result));
