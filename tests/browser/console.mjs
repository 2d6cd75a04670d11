// Drives headless Debian Chromium (through playwright-core) through the web console:
// a wrong token is refused (401), the right one signs in, the example mims are
// listed, a .js dropped on the page is deployed, its log line appears live after a
// call, a second drop hot swaps it, the container page is photographed, and Remove
// removes it. Every API call must carry the token as a Bearer header and no cookie.
//
//   node console.mjs http://127.0.0.1:PORT TOKEN SCREENSHOT.png IMAGE.tar
//
// IMAGE.tar (a packed folder mim answering "from a tar") is dropped last.
//
// Prints one JSON line `{"ok":true,...}` on success; on failure `{"ok":false,"error":...}`
// and exits 1. CHROMIUM overrides /usr/bin/chromium.
import { chromium } from 'playwright-core';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { basename } from 'node:path';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const [base, token, screenshot, image] = process.argv.slice(2);
if (!base || !token || !screenshot || !image) {
  console.error('usage: node console.mjs http://127.0.0.1:PORT TOKEN SCREENSHOT.png IMAGE.tar');
  process.exit(2);
}
const STEP = { timeout: 15000 };
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
const profile = mkdtempSync(join(tmpdir(), 'mimhost-console-'));
const args = [
  '--headless', '--no-sandbox', '--disable-gpu', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];

const v1 = "app.get('/', (request, response) => { console.log('greeter v1 says hi to ' + request.query.who); response.end('v1'); });\n";
const v2 = "app.get('/', (request, response) => { log.warn('greeter v2 says hi to ' + request.query.who); response.end('v2'); });\n";

/** Drops a file called `name` holding `text` (or, with `base64`, those bytes) on the
 *  element `selector`. */
async function dropFile(page, selector, name, text, base64) {
  const transfer = await page.evaluateHandle(([n, t, b]) => {
    const dt = new DataTransfer();
    const content = b ? Uint8Array.from(atob(b), (c) => c.charCodeAt(0)) : t;
    dt.items.add(new File([content], n, { type: b ? 'application/x-tar' : 'text/javascript' }));
    return dt;
  }, [name, text, base64 || null]);
  await page.dispatchEvent(selector, 'drop', { dataTransfer: transfer });
}

async function call(path) {
  const resp = await fetch(base + path);
  return { status: resp.status, body: await resp.text() };
}

async function waitForLog(page, text) {
  await page.waitForFunction((t) => Array.from(document.querySelectorAll('#log li')).some((n) => n.textContent.includes(t)), text, STEP);
}

async function run(context) {
  const page = await context.newPage();
  const apiCalls = [];
  page.on('request', (req) => {
    if (req.url().includes('/mcm/v1/')) apiCalls.push({ url: req.url(), headers: req.headers() });
  });
  const pageResponse = await page.goto(base + '/', STEP);
  const csp = pageResponse.headers()['content-security-policy'] || '';
  const cspViolations = [];
  page.on('console', (msg) => { if (/Content Security Policy/i.test(msg.text())) cspViolations.push(msg.text()); });

  // No token: the sign-in form says where the token is.
  await page.waitForSelector('#signin:not([hidden])', STEP);
  const hint = await page.textContent('#signin');
  // A wrong token: 401, still signed out.
  await page.fill('#token', 'not-the-token');
  await page.click('#signin-form button');
  await page.waitForFunction(() => document.querySelector('#signin-error').textContent.includes('401'), null, STEP);
  const refused = await page.textContent('#signin-error');

  // The right token: the list with the example mims.
  await page.fill('#token', token);
  await page.click('#signin-form button');
  await page.waitForFunction(() => document.body.dataset.view === 'list' && (document.body.dataset.containers || '').includes('hello'), null, STEP);
  const listed = (await page.evaluate(() => document.body.dataset.containers)).split(' ');

  // Drop a .js: a new container.
  await dropFile(page, '#drop', 'greeter.js', v1);
  await page.waitForSelector('#containers tr[data-name="greeter"]', STEP);
  const deployed = await page.textContent('#deploy-status');

  // Its page: the log follows live.
  await page.click('#containers tr[data-name="greeter"] a');
  await page.waitForFunction(() => document.body.dataset.view === 'detail' && document.body.dataset.log === 'live', null, STEP);
  const first = await call('/greeter/?who=Ada');
  await waitForLog(page, 'greeter v1 says hi to Ada');

  // Drop new code on the container page: hot swap.
  await dropFile(page, '#d-drop', 'greeter.js', v2);
  await page.waitForFunction(() => document.querySelector('#d-status').textContent.startsWith('hot swapped'), null, STEP);
  const swapped = await call('/greeter/?who=Grace');
  await waitForLog(page, 'greeter v2 says hi to Grace');
  await waitForLog(page, 'hot swapped');
  for (let i = 0; i < 12; i++) await call('/greeter/?who=' + i);
  await call('/greeter/missing');
  // The counters and the latency chart catch up on the next refresh.
  await page.waitForFunction(() => document.querySelector('#routes canvas') && /requests\s*1[5-9]/.test(document.querySelector('#counters').textContent), null, STEP);
  await page.setViewportSize({ width: 1200, height: 1000 });
  await page.screenshot({ path: screenshot, fullPage: true });

  // Remove (two clicks: the button asks first).
  await page.click('#remove');
  await page.click('#remove');
  await page.waitForFunction(() => document.body.dataset.view === 'list' && !(document.body.dataset.containers || '').split(' ').includes('greeter'), null, STEP);
  const gone = await call('/greeter/');

  // Drop a folder's tar (made by `mimhost pack`): named after the file.
  await dropFile(page, '#drop', basename(image), '', readFileSync(image).toString('base64'));
  await page.waitForSelector('#containers tr[data-name="packed"]', STEP);
  const fromTar = await call('/packed/');
  const cookies = await context.cookies();
  const withoutBearer = apiCalls.filter((c) => !/^Bearer /.test(c.headers.authorization || ''));
  const withCookie = apiCalls.filter((c) => c.headers.cookie);
  await page.close();
  return {
    csp, hint, refused, listed, deployed, first, swapped, gone, fromTar,
    cookies: cookies.length, apiCalls: apiCalls.length,
    withoutBearer: withoutBearer.map((c) => c.url), withCookie: withCookie.map((c) => c.url), cspViolations,
  };
}

let context;
let exitCode = 0;
try {
  context = await chromium.launchPersistentContext(profile, { executablePath, headless: true, args, timeout: 60000 });
  console.log(JSON.stringify({ ok: true, ...(await run(context)) }));
} catch (e) {
  console.log(JSON.stringify({ ok: false, error: String(e && e.stack ? e.stack : e) }));
  exitCode = 1;
} finally {
  if (context) await context.close().catch(() => {});
  rmSync(profile, { recursive: true, force: true });
}
process.exit(exitCode);
