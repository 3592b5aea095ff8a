// Drives the OHIF viewer in headless Chromium against the archive, as a person would: the
// study list, then each study opened from it in the Basic Viewer.
//
//   node ohif.mjs PLAN.json
//
// PLAN.json: {viewer, archive, chromium, screenshots, timeoutMs,
//             studies: [{key, uid, patientName, frames}]}
// (patientName as the study list shows it, "Family, Given"; frames: the instance's frame
// count). Prints one JSON report on stdout: what was seen, how long it took, every
// request to the archive, and the browser's errors. The caller judges it; this script
// only fails (exit 1) when it could not run at all.
import { chromium } from 'playwright-core';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const plan = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const timeout = plan.timeoutMs ?? 60_000;
const log = message => process.stderr.write(`[ohif] ${message}\n`);

// Flags that work for Debian's Chromium here (no GPU: WebGL2 through the software renderer).
const FLAGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

const pending = [];
let failStep = () => {};
const report = { worklist: null, studies: [], requests: [], failedRequests: [], consoleErrors: [], pageErrors: [] };
const profile = mkdtempSync(join(tmpdir(), 'filmless-chromium-'));
const began = Date.now();
const context = await chromium.launchPersistentContext(profile, {
  executablePath: plan.chromium,
  headless: true,
  args: FLAGS,
  viewport: { width: 1400, height: 900 },
});
try {
  const page = context.pages()[0] ?? (await context.newPage());
  page.setDefaultTimeout(timeout);
  watch(page);
  // The first-visit tour covers the viewport: skip it whenever it shows up.
  await page.addLocatorHandler(page.getByText('Skip all', { exact: true }), async skip => {
    await skip.click();
  });
  report.browserStartMs = Date.now() - began;

  // Each step stops the run when it fails: the studies are opened from the study list, and
  // one failure is enough to look into.
  report.worklist = await step('worklist', () => openWorklist(page));
  for (const study of plan.studies) {
    if (!report.worklist.ok || report.studies.some(seen => !seen.ok)) break;
    report.studies.push({ key: study.key, ...(await step(study.key, () => openStudy(page, study))) });
  }
  await Promise.allSettled(pending);
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
report.totalMs = Date.now() - began;
process.stdout.write(JSON.stringify(report) + '\n');

/** Runs one step, and records its failure with a screenshot. A request to the archive that
 * fails ends the step at once: the viewer would only wait for what never comes. */
async function step(name, body) {
  const started = Date.now();
  const archiveFailed = new Promise((_, reject) => {
    failStep = reject;
  });
  try {
    return { ok: true, ...(await Promise.race([body(), archiveFailed])), ms: Date.now() - started };
  } catch (error) {
    log(`${name} failed: ${error.message.split('\n')[0]}`);
    const screenshot = join(plan.screenshots, `${name}-failed.png`);
    const page = context.pages()[0];
    await page?.screenshot({ path: screenshot }).catch(() => {});
    return { ok: false, error: error.message, screenshot, ms: Date.now() - started };
  } finally {
    failStep = () => {};
  }
}

function watch(page) {
  page.on('response', response => {
    const request = response.request();
    if (!request.url().startsWith(plan.archive)) return;
    const entry = {
      method: request.method(),
      url: request.url().slice(plan.archive.length),
      status: response.status(),
      contentType: response.headers()['content-type'] ?? null,
      accept: request.headers()['accept'] ?? null,
      authorization: (request.headers()['authorization'] ?? '').split(' ')[0] || null,
    };
    report.requests.push(entry);
    if (response.status() >= 400) {
      failStep(new Error(`${request.method()} ${entry.url} -> ${response.status()}`));
    }
    if (request.url().includes('/frames/') && response.ok()) {
      // What the frame came as: the first part's Content-Type.
      pending.push(
        response
          .body()
          .then(body => {
            const head = body.subarray(0, 512).toString('latin1');
            entry.partType = /\r\nContent-Type:\s*([^\r\n]+)/i.exec(head)?.[1] ?? null;
          })
          .catch(() => {}),
      );
    }
  });
  page.on('requestfailed', request => {
    const error = request.failure()?.errorText ?? null;
    // The viewer cancels requests it no longer needs (a prefetch when the study closes).
    if (!request.url().startsWith(plan.archive) || error === 'net::ERR_ABORTED') return;
    report.failedRequests.push({ url: request.url().slice(plan.archive.length), error });
    // A response the page may not read (no CORS headers) is such a failure too.
    failStep(new Error(`${request.method()} ${request.url()} failed (${error})`));
  });
  page.on('console', message => {
    if (message.type() === 'error') report.consoleErrors.push(message.text().slice(0, 500));
  });
  page.on('pageerror', error => report.pageErrors.push(error.message.slice(0, 500)));
}

async function openWorklist(page) {
  await page.goto(plan.viewer + '/');
  const rows = page.locator('tbody');
  for (const study of plan.studies) {
    await rows.getByText(study.patientName, { exact: true }).waitFor();
  }
  // The study list's rows, first column: the patient's name.
  const cells = await page.locator('tbody tr td:first-child').allTextContents();
  const names = cells.map(name => name.trim()).filter(Boolean);
  const counter = (await page.getByText(/^\d+-\d+ of \d+$/).first().textContent())?.trim() ?? null;
  const screenshot = join(plan.screenshots, 'worklist.png');
  await page.screenshot({ path: screenshot });
  return { names, counter, screenshot };
}

async function openStudy(page, study) {
  // From the study list: select the study, then launch the Basic Viewer on it.
  if (!page.url().startsWith(plan.viewer + '/?') && page.url() !== plan.viewer + '/') {
    await page.goto(plan.viewer + '/');
  }
  await page.locator('tbody').getByText(study.patientName, { exact: true }).click();
  await page.getByRole('button', { name: 'Basic Viewer', exact: true }).click();
  await page.waitForURL(url => url.pathname === '/viewer' && url.search.includes(study.uid));

  const canvas = page.locator('canvas.cornerstone-canvas').first();
  await canvas.waitFor();
  const first = await rendered(page);
  const label = await frameLabel(page, `1/${study.frames}`);

  const result = { url: page.url(), firstFrame: first, frameLabel: label };
  if (study.frames > 1) {
    // Scroll through the stack: the next frames must be fetched and drawn.
    await page.locator('[data-cy="viewport-pane"]').first().hover();
    const target = Math.min(study.frames, 4);
    for (let i = 1; i < target; i++) await page.mouse.wheel(0, 100);
    result.scrolledLabel = await frameLabel(page, `${target}/${study.frames}`);
    result.scrolledFrame = await rendered(page, first.hash);
  }
  const skip = page.getByText('Skip all', { exact: true });
  if (await skip.isVisible()) await skip.click();
  await skip.waitFor({ state: 'hidden' });
  result.screenshot = join(plan.screenshots, `${study.key}.png`);
  await page.screenshot({ path: result.screenshot });
  result.viewportScreenshot = join(plan.screenshots, `${study.key}-viewport.png`);
  await page.locator('[data-cy="viewport-pane"]').first().screenshot({ path: result.viewportScreenshot });
  await page.locator('[data-cy="return-to-work-list"]').click();
  await page.waitForURL(url => url.pathname === '/');
  return result;
}

/** Waits until the viewport's canvas shows an image (at least 1% of its pixels not black)
 * and, given the hash of what it showed before, until that changes. */
async function rendered(page, previousHash = null) {
  const handle = await page.waitForFunction(
    previous => {
      const canvas = document.querySelector('canvas.cornerstone-canvas');
      if (!canvas || !canvas.width || !canvas.height) return null;
      const { data } = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height);
      let lit = 0;
      let hash = 0;
      for (let i = 0; i < data.length; i += 4) {
        if (data[i] > 16 || data[i + 1] > 16 || data[i + 2] > 16) lit++;
        hash = (Math.imul(hash, 31) + data[i] + (data[i + 1] << 8) + (data[i + 2] << 16)) | 0;
      }
      const pixels = data.length / 4;
      if (lit < pixels / 100 || hash === previous) return null;
      return { width: canvas.width, height: canvas.height, lit, pixels, hash };
    },
    previousHash,
    { polling: 250 },
  );
  return handle.jsonValue();
}

/** Waits for the viewport's bottom-right overlay to show "(expected)", e.g. "(1/30)". */
async function frameLabel(page, expected) {
  const overlay = page.locator('[data-cy="viewport-overlay-bottom-right"]').first();
  await overlay.getByText(`(${expected})`).or(overlay.getByText(expected, { exact: true })).first().waitFor();
  return (await overlay.textContent())?.trim() ?? null;
}
