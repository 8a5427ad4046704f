// Open benchmarks/browser/latency.html in headless Chromium (the project's launcher, web/scripts/chromium.mjs)
// and print its result as one JSON line. argv[2]: {"url": base URL serving web/ at /, this folder at /bench/,
// the model at /model/, "backend", "runs", "warmup", "chromium": path, "timeout_ms"}
import { parseArguments, withPage } from '../../web/scripts/chromium.mjs';

const args = parseArguments();
const query = new URLSearchParams({ backend: args.backend || 'wasm', runs: args.runs || 20, warmup: args.warmup || 3 });
const result = await withPage(args.chromium, async (page, log) => {
  await page.goto(new URL(`bench/latency.html?${query}`, args.url).href);
  const handle = await page.waitForFunction(() => window.latencyResult, null, { timeout: args.timeout_ms || 300000 })
    .catch((error) => { throw new Error(`${error.message}\nbrowser log:\n${log.join('\n')}`); });
  const outcome = await handle.jsonValue();
  if (outcome.error) throw new Error(`${outcome.error}\nbrowser log:\n${log.join('\n')}`);
  return { ...outcome, browser: page.context().browser()?.version() ?? null };
});
console.log(JSON.stringify(result));
