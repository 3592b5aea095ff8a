// Opens a share's access page in headless Chromium on a phone-sized screen, as its
// recipient would: the challenge, then the study list with its thumbnails, one study's
// images, and the printable page staff hand out.
//
//   node share_page.mjs PLAN.json
//
// PLAN.json: {chromium, pageUrl, birthDate (YYYY-MM-DD), printHtml, archive, screenshots}.
// Prints one JSON report on stdout; exits 1 only when it could not run at all.
import { chromium } from 'playwright-core';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const plan = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const FLAGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];
const profile = mkdtempSync(join(tmpdir(), 'filmless-share-'));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: plan.chromium, headless: true, args: FLAGS,
  viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true,
});
const report = { responses: [], consoleErrors: [], cspViolations: [] };
try {
  const page = context.pages()[0] ?? (await context.newPage());
  page.setDefaultTimeout(30_000);
  page.on('response', r => report.responses.push({ url: r.url(), status: r.status() }));
  page.on('console', m => {
    if (m.type() === 'error') report.consoleErrors.push(m.text());
    if (m.text().includes('Content Security Policy')) report.cspViolations.push(m.text());
  });

  const challenge = await page.goto(plan.pageUrl);
  report.challengeStatus = challenge.status();
  report.challengeHeading = await page.locator('h1').innerText();
  await page.screenshot({ path: join(plan.screenshots, 'share-challenge.png'), fullPage: true });

  await page.fill('#answer', plan.birthDate);
  await Promise.all([page.waitForURL(/\/s\/[A-Za-z0-9_-]+$/), page.click('button[type=submit]')]);
  report.listHeading = await page.locator('h1').innerText();
  report.studyTitles = await page.locator('.study h2').allInnerTexts();
  await page.waitForFunction(() => [...document.images].every(i => i.complete));
  report.thumbnails = await page.$$eval('img.thumb', imgs => imgs.map(i => ({ w: i.naturalWidth, h: i.naturalHeight })));
  report.downloadLink = await page.locator('a[download]').count();
  report.pageUrl = page.url();
  await page.screenshot({ path: join(plan.screenshots, 'share-studies.png'), fullPage: true });

  await Promise.all([page.waitForURL(/\/studies\//), page.locator('.study a.button').first().click()]);
  await page.waitForFunction(() => [...document.images].every(i => i.complete));
  report.images = await page.$$eval('.grid img', imgs => imgs.map(i => i.naturalWidth));
  await page.screenshot({ path: join(plan.screenshots, 'share-study.png'), fullPage: true });

  // The printable page, as the archive returned it to staff.
  await page.setViewportSize({ width: 794, height: 1123 });
  await page.route(`${plan.archive}/print-preview`, route =>
    route.fulfill({ status: 200, contentType: 'text/html', body: plan.printHtml }));
  await page.goto(`${plan.archive}/print-preview`);
  report.printQr = await page.locator('.qr svg').count();
  await page.screenshot({ path: join(plan.screenshots, 'share-print.png'), fullPage: true });
} catch (error) {
  report.error = String(error?.stack ?? error);
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
process.stdout.write(JSON.stringify(report) + '\n');
