// One large-image case in the real page (web/index.html, served at `url`), in headless Chromium (the project's
// launcher, web/scripts/chromium.mjs): load the page and its model, choose `file` through the page's file input,
// wait for the result or the refusal. Prints one JSON line: how the page behaved (web/scripts/page_probe.mjs:
// elapsedMs, maxFrameGapMs, longestTaskMs, paintedStatuses), its final state and status, the peak JS heap
// (CDP Performance.getMetrics, polled every 50 ms) and the wall-clock times (Date.now()) of the choice and of the
// outcome, by which benchmarks/browser/large_images.py matches its /proc RSS samples of the browser's processes.
// argv[2]: {"url", "file", "chromium": path, "timeout_ms"}
import { parseArguments, withPage } from '../../web/scripts/chromium.mjs';
import { behaviourSince, installProbe, markStart, waitForState } from '../../web/scripts/page_probe.mjs';

const args = parseArguments();
const timeout = args.timeout_ms || 120000;

async function jsHeapBytes(session) {
  const { metrics } = await session.send('Performance.getMetrics');
  return metrics.find((metric) => metric.name === 'JSHeapUsedSize').value;
}

const result = await withPage(args.chromium, async (page, log) => {
  await page.addInitScript(installProbe);
  const session = await page.context().newCDPSession(page);
  await session.send('Performance.enable');
  await page.goto(args.url);
  await waitForState(page, timeout, ['ready', 'error']);
  await page.waitForTimeout(1000);  // let start-up work (model compilation, GC) settle before the baseline
  const heapBefore = await jsHeapBytes(session);
  let heapPeak = heapBefore;
  let polling = true;
  const poll = (async () => {
    while (polling) {
      heapPeak = Math.max(heapPeak, await jsHeapBytes(session).catch(() => 0));
      await new Promise((resolve) => { setTimeout(resolve, 50); });
    }
  })();
  const started = await markStart(page);
  const chosenAt = Date.now();
  await page.setInputFiles('#file-input', args.file);
  await waitForState(page, timeout, ['done', 'error']);
  const outcomeAt = Date.now();
  polling = false;
  await poll;
  const behaviour = await behaviourSince(page, started);
  const shown = await page.evaluate(() => ({ state: document.body.dataset.state,
    status: document.getElementById('status').textContent }));
  return { ...behaviour, ...shown, chosenAt, outcomeAt, jsHeapBeforeMb: heapBefore / 1e6,
    jsHeapPeakMb: heapPeak / 1e6, browser: page.context().browser()?.version() ?? null, log };
});
console.log(JSON.stringify(result));
