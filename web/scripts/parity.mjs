// Run a TF.js graph model on the pipeline's parity images in headless Chromium; print its probabilities.
// argv[2]: {"url": base URL serving web/ at /, the model at /model/, the images at /parity/,
//           "backend": "wasm"|"cpu"|"webgl", "chromium": path, "timeout_ms": n}
import { parseArguments, withPage } from './chromium.mjs';

const args = parseArguments();
const result = await withPage(args.chromium, async (page, log) => {
  await page.goto(new URL(`scripts/parity.html?backend=${args.backend || 'wasm'}`, args.url).href);
  const handle = await page.waitForFunction(() => window.parityResult, null, { timeout: args.timeout_ms || 60000 })
    .catch((error) => { throw new Error(`${error.message}\nbrowser log:\n${log.join('\n')}`); });
  const outcome = await handle.jsonValue();
  if (outcome.error) throw new Error(`${outcome.error}\nbrowser log:\n${log.join('\n')}`);
  return { ...outcome, browser: page.context().browser()?.version() ?? null, log };
});
console.log(JSON.stringify(result));
