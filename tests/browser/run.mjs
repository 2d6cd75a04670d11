// Drives headless Debian Chromium (through playwright-core) against a running
// mimhost: the seed 003 chat page in two tabs, the seed 000 browser snippet on
// the notify dispatch channel, and seed 002's snippet on the relay mim's endpoint.
//
//   node run.mjs http://127.0.0.1:PORT
//
// Prints one JSON line `{"ok":true,...}` on success; on failure prints
// `{"ok":false,"error":...}` and exits 1. CHROMIUM overrides /usr/bin/chromium.
import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const base = process.argv[2];
if (!base) {
  console.error('usage: node run.mjs http://127.0.0.1:PORT');
  process.exit(2);
}
const STEP_TIMEOUT = 15000;
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
const profile = mkdtempSync(join(tmpdir(), 'mimhost-chromium-'));
const args = [
  '--headless', '--no-sandbox', '--disable-gpu', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];

/** The texts of the chat lines a page shows. */
function lines(page) {
  return page.$$eval('#log .line', (nodes) => nodes.map((n) => n.textContent));
}

/** Waits until `page` shows a chat line equal to `text`. */
async function waitForLine(page, text) {
  await page.waitForFunction(
    (t) => Array.from(document.querySelectorAll('#log .line')).some((n) => n.textContent === t),
    text,
    { timeout: STEP_TIMEOUT },
  );
}

/** Two tabs on /chat/: what one types, both show. */
async function chat(context) {
  const [a, b] = [await context.newPage(), await context.newPage()];
  for (const page of [a, b]) {
    await page.goto(base + '/chat/', { timeout: STEP_TIMEOUT });
    await page.waitForFunction(() => document.body.dataset.state === 'open', null, { timeout: STEP_TIMEOUT });
    // The welcome line comes first.
    await page.waitForFunction(() => document.querySelectorAll('#log .line').length >= 1, null, { timeout: STEP_TIMEOUT });
  }
  await a.fill('#text', 'hello from tab A');
  await a.press('#text', 'Enter');
  await waitForLine(a, 'hello from tab A');
  await waitForLine(b, 'hello from tab A');
  await b.fill('#text', 'and back from tab B');
  await b.click('button');
  await waitForLine(a, 'and back from tab B');
  await waitForLine(b, 'and back from tab B');
  const result = { a: await lines(a), b: await lines(b) };
  await a.close();
  await b.close();
  return result;
}

/** Seed 000's client snippet, verbatim apart from recording what it logs. */
async function notify(context) {
  const page = await context.newPage();
  const logged = [];
  page.on('console', (msg) => logged.push(msg.text()));
  // Any page of the host gives the snippet a loopback origin.
  await page.goto(base + '/notify/', { timeout: STEP_TIMEOUT });
  const wsUrl = base.replace(/^http/, 'ws') + '/ws/notify';
  await page.evaluate((url) => {
    window.received = [];
    window.connected = false;
    // Browser client example
    const ws = new WebSocket(url);
    ws.onmessage = (event) => {
      const data = JSON.parse(event.data);
      console.log('Event type:', data.type);
      console.log('Message:', data.message);
      window.received.push(data);
    };
    ws.onopen = () => {
      console.log('Connected to WebSocket');
      window.connected = true;
    };
    ws.onclose = () => {
      console.log('Disconnected from WebSocket');
    };
  }, wsUrl);
  await page.waitForFunction(() => window.connected, null, { timeout: STEP_TIMEOUT });
  const posted = await fetch(base + '/notify/notify', { method: 'POST' });
  const answer = await posted.text();
  if (posted.status !== 200) throw new Error(`POST /notify/notify answered ${posted.status}: ${answer}`);
  await page.waitForFunction(() => window.received.length >= 1, null, { timeout: STEP_TIMEOUT });
  const received = await page.evaluate(() => window.received);
  await page.close();
  return { answer, received, logged };
}

/** Seed 002's browser snippet on the relay mim's Dirigible endpoint: what the page
 * sends comes back through the relay's outbound client. */
async function dirigible(context) {
  const page = await context.newPage();
  await page.goto(base + '/relay/', { timeout: STEP_TIMEOUT });
  const url = base.replace(/^http/, 'ws') + '/websockets/v4/service/relay';
  await page.evaluate((u) => {
    window.relayed = [];
    let ws = new WebSocket(u);
    ws.onmessage = (event) => window.relayed.push(event.data);
    ws.onopen = () => ws.send('hello from chromium');
  }, url);
  await page.waitForFunction(() => window.relayed.length >= 1, null, { timeout: STEP_TIMEOUT });
  const received = await page.evaluate(() => window.relayed);
  await page.close();
  return { received };
}

let context;
let exitCode = 0;
try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath,
    headless: true,
    args,
    timeout: 60000,
  });
  const result = {
    ok: true, chat: await chat(context), notify: await notify(context), dirigible: await dirigible(context),
  };
  console.log(JSON.stringify(result));
} catch (e) {
  console.log(JSON.stringify({ ok: false, error: String(e && e.stack ? e.stack : e) }));
  exitCode = 1;
} finally {
  if (context) await context.close().catch(() => {});
  rmSync(profile, { recursive: true, force: true });
}
process.exit(exitCode);
