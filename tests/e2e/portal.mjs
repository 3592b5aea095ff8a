// A patient's journey through the portal in headless Chromium, on a phone-sized screen:
// the film library prints an enrolment code (staff signed in through the identity
// provider), the patient enrols with it, signs in by the emailed link, sees their study
// with its thumbnail, downloads the ZIP, views its images, shares the study with a physician, who opens it,
// then revokes the share, after which the physician's link is refused. Screenshots are saved.
//
//   node portal.mjs PLAN.json
//
// PLAN.json: {chromium, archive, study, email, recipient, zipPath, screenshots}.
// The emailed link is asked of the test on stdout ({"ask": {...}}) and read back on stdin,
// one JSON line each. The last line on stdout is the report; exits 1 only when it could
// not run at all.
import { chromium } from 'playwright-core';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

const plan = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const FLAGS = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];
const answers = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
async function ask(question) {
  process.stdout.write(JSON.stringify({ ask: question }) + '\n');
  const { value } = await answers.next();
  return JSON.parse(value);
}

const browser = await chromium.launch({ executablePath: plan.chromium, headless: true, args: FLAGS });
const phone = { viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true };
const report = { failed: [] };
const pages = {};
const shot = (who, name) => pages[who].screenshot({ path: join(plan.screenshots, `portal-${name}.png`), fullPage: true });

async function open(who, options) {
  const context = await browser.newContext({ ...options, acceptDownloads: true });
  const page = await context.newPage();
  page.setDefaultTimeout(30_000);
  page.on('response', r => {
    if (r.status() >= 400 && !r.url().endsWith('/favicon.ico')) report.failed.push(`${who} ${r.status()} ${r.url()}`);
  });
  pages[who] = page;
  return page;
}

try {
  // The film library desk prints a code for the patient.
  const staff = await open('staff', { viewport: { width: 1024, height: 768 } });
  await staff.goto(`${plan.archive}/console`);
  await staff.click('a[href="/console/login"]');
  await staff.waitForSelector('button[value=alice]');
  await Promise.all([staff.waitForURL(`${plan.archive}/console`), staff.click('button[value=alice]')]);
  await staff.goto(`${plan.archive}/console/studies/${plan.study}`);
  await staff.click('form[action="/console/enrolment-codes"] button[type=submit]');
  await staff.waitForSelector('p.code');
  report.enrolmentCode = await staff.locator('p.code').innerText();
  await shot('staff', '1-enrolment-code');

  // The patient enrols with it.
  const patient = await open('patient', phone);
  await patient.goto(`${plan.archive}/portal`);
  report.signinHeading = await patient.locator('h1').innerText();
  await shot('patient', '2-signin');
  await Promise.all([patient.waitForURL(/\/portal\/enrol$/), patient.click('a[href="/portal/enrol"]')]);
  await patient.fill('#code', report.enrolmentCode);
  await patient.fill('#email', plan.email);
  await shot('patient', '3-enrol');
  await Promise.all([patient.waitForURL(/\/portal\/enrol$/), patient.click('main button[type=submit]')]);
  report.enrolled = await patient.locator('main').innerText();
  await shot('patient', '4-link-sent');

  // The emailed link: it asks before it signs in.
  const { link } = await ask({ mailTo: plan.email, count: 1 });
  await patient.goto(link);
  report.confirmHeading = await patient.locator('h1').innerText();
  await shot('patient', '5-confirm');
  await Promise.all([patient.waitForURL(`${plan.archive}/portal`), patient.click('main button[type=submit]')]);
  report.homeHeading = await patient.locator('h1').innerText();
  report.studies = await patient.locator('tbody tr').allInnerTexts();
  await shot('patient', '6-studies');

  await Promise.all([patient.waitForURL(/\/portal\/studies\/[0-9.]+$/), patient.locator('tbody a').first().click()]);
  await patient.waitForFunction(() => [...document.images].every(i => i.complete));
  report.thumbnails = await patient.$$eval('.series img', imgs => imgs.map(i => i.naturalWidth));
  await shot('patient', '7-study');

  const [download] = await Promise.all([patient.waitForEvent('download'), patient.click('a[download]')]);
  report.zipName = download.suggestedFilename();
  await download.saveAs(plan.zipPath);

  // The images in the share pages' viewer, through a short-lived share of the patient's own.
  await Promise.all([patient.waitForURL(/\/s\/[A-Za-z0-9_-]+\/studies\//), patient.click('form[action$="/view"] button')]);
  await patient.waitForFunction(() => [...document.images].every(i => i.complete));
  report.viewerImages = await patient.$$eval('.grid img', imgs => imgs.map(i => i.naturalWidth));
  report.viewerHeading = await patient.locator('h1').innerText();
  await shot('patient', '8-viewer');
  await patient.goBack();

  // A share with a physician, for a bounded time.
  report.maxDays = await patient.getAttribute('#days', 'max');
  await patient.fill('#recipient', plan.recipient);
  await patient.fill('#days', '7');
  await patient.click('form[action$="/share"] button[type=submit]');
  await patient.waitForSelector('.qr svg');
  report.shareLink = (await patient.locator('p.url code').innerText()).trim();
  report.accessCode = await patient.locator('p.code').innerText();
  report.printed = await patient.locator('main').innerText();
  await shot('patient', '9-share-made');

  // The physician opens it.
  const physician = await open('physician', phone);
  await Promise.all([physician.waitForURL(/\/s\/[A-Za-z0-9_-]+$/), physician.goto(report.shareLink)]);
  report.sessionPage = physician.url();
  report.physicianHeading = await physician.locator('h1').innerText();
  report.physicianStudies = await physician.locator('.study').count();
  await shot('physician', '10-physician-opens');

  // The patient sees it among their shares, opened, and revokes it.
  await patient.goto(`${plan.archive}/portal/shares`);
  report.shares = await patient.locator('tbody tr').allInnerTexts();
  await shot('patient', '11-my-shares');
  const row = patient.locator('tbody tr', { hasText: plan.recipient });
  await Promise.all([patient.waitForURL(/\/portal\/shares\/[^/]+$/), row.locator('a').click()]);
  report.shareBefore = await patient.locator('main').innerText();
  await patient.click('form[action$="/revoke"] button[type=submit]');
  // The same address again, without the form: the share is no longer active.
  await patient.locator('form[action$="/revoke"]').waitFor({ state: 'detached' });
  report.shareAfter = await patient.locator('main').innerText();
  report.revokeButtons = await patient.locator('form[action$="/revoke"]').count();
  await shot('patient', '12-revoked');

  // The physician's link, and the page it opened, are refused now.
  const refused = await physician.goto(report.shareLink);
  report.refusedStatus = refused.status();
  report.refusedText = await physician.locator('main').innerText();
  await shot('physician', '13-link-refused');
  report.sessionStatus = (await physician.goto(report.sessionPage)).status();
} catch (error) {
  report.error = String(error?.stack ?? error);
  for (const [who, page] of Object.entries(pages)) {
    await page.screenshot({ path: join(plan.screenshots, `portal-error-${who}.png`), fullPage: true }).catch(() => null);
  }
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(report) + '\n');
process.exit(0);
