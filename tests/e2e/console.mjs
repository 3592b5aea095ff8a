// The film library desk in headless Chromium: sign in through the identity provider,
// find a study, share it (the Access Page), and revoke the share. Screenshots are saved.
//
//   node console.mjs PLAN.json
//
// PLAN.json: {chromium, archive, patientName, screenshots}.
// Prints one JSON report on stdout; exits 1 only when it could not run at all.
import { chromium } from 'playwright-core';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const plan = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const FLAGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];
const profile = mkdtempSync(join(tmpdir(), 'filmless-console-'));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: plan.chromium, headless: true, args: FLAGS, viewport: { width: 1024, height: 768 },
});
const report = { failed: [] };
const shot = name => page.screenshot({ path: join(plan.screenshots, `console-${name}.png`), fullPage: true });
let page;
try {
  page = context.pages()[0] ?? (await context.newPage());
  page.setDefaultTimeout(30_000);
  // Every response but the browser's own favicon requests (the pages have none).
  page.on('response', r => {
    if (r.status() >= 400 && !r.url().endsWith('/favicon.ico')) report.failed.push(`${r.status()} ${r.url()}`);
  });

  await page.goto(`${plan.archive}/console`);
  report.signinHeading = await page.locator('h1').innerText();
  await shot('signin');
  await page.click('a[href="/console/login"]');
  // The provider's own page: pick the user.
  await page.waitForSelector('button[value=alice]');
  await shot('provider');
  await Promise.all([page.waitForURL(`${plan.archive}/console`), page.click('button[value=alice]')]);
  report.home = await page.locator('main').innerText();
  await shot('home');

  await page.click('nav a[href="/console/studies"]');
  await page.fill('#PatientName', plan.patientName);
  await Promise.all([page.waitForURL(/PatientName=/), page.press('#PatientName', 'Enter')]);
  report.results = await page.locator('tbody tr').count();
  await shot('search');

  await Promise.all([page.waitForURL(/\/console\/studies\/[0-9.]+$/), page.locator('tbody a').first().click()]);
  await page.waitForFunction(() => [...document.images].every(i => i.complete));
  report.thumbnails = await page.$$eval('.series img', imgs => imgs.map(i => i.naturalWidth));
  await shot('study');

  await page.fill('#recipient', 'Dr. Example');
  await page.check('input[name=permissions][value=download]');
  await page.click('form[action="/console/shares"] button[type=submit]');
  await page.waitForSelector('.qr svg');
  report.accessCode = await page.locator('.code').innerText();
  await shot('access-page');
  const [download] = await Promise.all([page.waitForEvent('download'), page.click('form.noprint button')]);
  report.pdfName = download.suggestedFilename();

  await page.goto(`${plan.archive}/console/shares`);
  report.sharesListed = await page.locator('tbody tr').count();
  await shot('shares');
  await Promise.all([page.waitForURL(/\/console\/shares\/[^/]+$/), page.locator('tbody a').first().click()]);
  await Promise.all([page.waitForURL(/\/console\/shares\/[^/]+$/), page.click('form[action$="/revoke"] button')]);
  report.afterRevoke = await page.locator('main p').first().innerText();
  await shot('revoked');
} catch (error) {
  report.error = String(error?.stack ?? error);
  report.errorPage = await page?.locator('body').innerText().catch(() => null);
  await shot('error').catch(() => null);
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
console.log(JSON.stringify(report));
