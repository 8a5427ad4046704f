// Open the page in headless Chromium, upload files through its own file input, report what it displays.
// argv[2]: {"url": page URL, "uploads": [{"path": file, "screenshot": optional PNG path}],
//           "chromium": path, "timeout_ms": per step}
import { parseArguments, withPage } from './chromium.mjs';

const args = parseArguments();
const timeout = args.timeout_ms || 60000;
const origin = new URL(args.url).origin;

async function waitForState(page, states) {
  await page.waitForFunction((wanted) => wanted.includes(document.body.dataset.state), states, { timeout });
}

async function readPage(page) {
  return page.evaluate(() => ({
    state: document.body.dataset.state,
    status: document.getElementById('status').textContent,
    resultShown: !document.getElementById('result').hidden,
    unsureShown: !document.getElementById('unsure').hidden,
    predictions: [...document.querySelectorAll('#predictions li')].map((item) => ({
      label: item.dataset.label, probability: Number(item.dataset.probability),
      text: item.querySelector('.class-name').textContent, longName: item.querySelector('.long-name').textContent,
    })),
    modelInfo: document.getElementById('model-info').textContent,
    disclaimer: document.getElementById('disclaimer').textContent,
  }));
}

const result = await withPage(args.chromium, async (page, log) => {
  const foreign = [];
  page.on('request', (request) => {
    const url = new URL(request.url());
    if (!['data:', 'blob:'].includes(url.protocol) && url.origin !== origin) foreign.push(request.url());
  });
  await page.goto(args.url);
  await waitForState(page, ['ready', 'error']);
  const loaded = await readPage(page);
  const uploads = [];
  for (const upload of args.uploads || []) {
    await page.evaluate(() => { document.body.dataset.state = 'waiting'; });
    await page.setInputFiles('#file-input', upload.path);
    await waitForState(page, ['done', 'error']);
    uploads.push({ path: upload.path, ...(await readPage(page)) });
    if (upload.screenshot) await page.screenshot({ path: upload.screenshot, fullPage: true });
  }
  return { loaded, uploads, foreignRequests: foreign, log };
});
console.log(JSON.stringify(result));
