// How the page behaves while it works, seen from inside it: animation frames, status texts on screen, page states
// and long tasks, each timed on the page's clock. Shared by check_page.mjs and benchmarks/browser/large_images.mjs.

// Installed before the page's scripts: animation frames, status changes, page states and long tasks, timed.
export function installProbe() {
  const probe = { frames: [], statuses: [], states: [], longTasks: [] };
  window.pageProbe = probe;
  let lastStatus = null;
  const onFrame = (time) => {
    probe.frames.push(time);
    const status = document.getElementById('status')?.textContent ?? '';
    if (status !== lastStatus) { probe.statuses.push([time, status]); lastStatus = status; }
    requestAnimationFrame(onFrame);
  };
  requestAnimationFrame(onFrame);
  new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) probe.longTasks.push([entry.startTime, entry.duration]);
  }).observe({ type: 'longtask', buffered: true });
  document.addEventListener('DOMContentLoaded', () => new MutationObserver(() => {
    probe.states.push([performance.now(), document.body.dataset.state]);
  }).observe(document.body, { attributes: true, attributeFilter: ['data-state'] }));
}

export async function waitForState(page, timeout, states) {
  await page.waitForFunction((wanted) => wanted.includes(document.body.dataset.state), states, { timeout });
}

// Mark the start of a user action: returns the page's clock, and resets the state so waits see the outcome.
export async function markStart(page) {
  return page.evaluate(() => { document.body.dataset.state = 'waiting'; return performance.now(); });
}

// How the page behaved from `started` until the first outcome ("done" or "error") after it.
export async function behaviourSince(page, started) {
  return page.evaluate((since) => {
    const probe = window.pageProbe;
    const finished = probe.states.find(([time, state]) => time >= since && ['done', 'error'].includes(state));
    const end = finished ? finished[0] : performance.now();
    const frames = [since, ...probe.frames.filter((time) => time > since && time <= end), end];
    const lastBefore = probe.statuses.filter(([time]) => time <= since).pop();
    return {
      elapsedMs: end - since,
      maxFrameGapMs: Math.max(...frames.slice(1).map((time, index) => time - frames[index])),
      longestTaskMs: Math.max(0, ...probe.longTasks.filter(([time, duration]) => time + duration > since
        && time < end).map(([, duration]) => duration)),
      paintedStatuses: [...(lastBefore ? [lastBefore] : []), ...probe.statuses.filter(([time]) => time > since
        && time <= end)].map(([, status]) => status),
    };
  }, started);
}
