// Opens de-identifying shares in headless Chromium as their recipient would: each share's
// page with its thumbnails, one study's images, and its ZIP. Screenshots are saved.
//
//   node deidentified.mjs PLAN.json
//
// PLAN.json: {chromium, screenshots, shares: [{name, pageUrl, zipPath}]}.
// Prints one JSON report on stdout: per share, what each page showed (its text and its
// HTML, for the test to search for identity); exits 1 only when it could not run at all.
import { chromium } from 'playwright-core';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

const plan = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const FLAGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];
const browser = await chromium.launch({ executablePath: plan.chromium, headless: true, args: FLAGS });
const report = { failed: [], shares: {} };
let page;
try {
  for (const share of plan.shares) {
    const context = await browser.newContext({ viewport: { width: 390, height: 844 }, acceptDownloads: true });
    page = await context.newPage();
    page.setDefaultTimeout(30_000);
    page.on('response', r => {
      if (r.status() >= 400 && !r.url().endsWith('/favicon.ico')) report.failed.push(`${r.status()} ${r.url()}`);
    });
    const seen = (report.shares[share.name] = {});
    await Promise.all([page.waitForURL(/\/s\/[A-Za-z0-9_-]+$/), page.goto(share.pageUrl)]);
    await page.waitForFunction(() => [...document.images].every(i => i.complete));
    seen.heading = await page.locator('h1').innerText();
    seen.notice = await page.locator('p.notice').count();
    seen.warning = await page.locator('p.warning[role=alert]').allInnerTexts();
    seen.thumbnails = await page.$$eval('img.thumb', imgs => imgs.map(i => i.naturalWidth));
    seen.listText = await page.locator('body').innerText();
    seen.listHtml = await page.content();
    await page.screenshot({ path: join(plan.screenshots, `deidentified-${share.name}-studies.png`), fullPage: true });

    const [download] = await Promise.all([page.waitForEvent('download'), page.click('a[download]')]);
    await download.saveAs(share.zipPath);

    await Promise.all([page.waitForURL(/\/studies\//), page.locator('.study a.button').first().click()]);
    await page.waitForFunction(() => [...document.images].every(i => i.complete));
    seen.images = await page.$$eval('.grid img', imgs => imgs.map(i => i.naturalWidth));
    seen.studyText = await page.locator('body').innerText();
    seen.studyHtml = await page.content();
    await page.screenshot({ path: join(plan.screenshots, `deidentified-${share.name}-study.png`), fullPage: true });
    await context.close();
  }
} catch (error) {
  report.error = String(error?.stack ?? error);
  await page?.screenshot({ path: join(plan.screenshots, 'deidentified-error.png'), fullPage: true }).catch(() => null);
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(report) + '\n');
