// End-to-end tests of the console: a real Chromium against a real cityward demo node.
//
// How to run (from console/, after `npm ci && npm run build`):
//
//   CITYWARD_BIN=/path/to/cityward CITYWARD_CONSOLE_DIST=dist npm run test:e2e
//       Starts `cityward demo --size small` on a free port in a temporary data directory
//       (stopped and removed at the end, also on failure), and serves console/dist from a
//       small proxy in this script that passes /api/*, /healthz and /open311/* to the node
//       (streamed, so the live SSE stream works). Use this until the node embeds dist/.
//
//   CITYWARD_BIN=/path/to/cityward npm run test:e2e
//       The same, but the node serves the console itself at / (once it embeds dist/).
//
//   CITYWARD_URL=http://127.0.0.1:8080 npm run test:e2e
//       A demo node already running there (users `dispatcher`, `responder`, `ingest` with
//       password `demo`) that serves the console; nothing is started or stopped.
//
// Other settings: CHROMIUM (default /usr/bin/chromium), E2E_HEADFUL=1 to watch,
// E2E_ARTIFACTS (default: a temporary directory) for screenshots of failed checks.
//
// Exit code 0 when every scenario passed; otherwise 1, and each failed check is named.

import { spawn } from 'node:child_process';
import { createReadStream, existsSync, mkdtempSync, openSync, rmSync, statSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const PASSWORD = 'demo';
const artifacts = process.env.E2E_ARTIFACTS || mkdtempSync(path.join(os.tmpdir(), 'cityward-e2e-artifacts-'));

// ---------------------------------------------------------------- plumbing

class CheckFailed extends Error {}

/** Fails the current scenario with a message naming what was expected. */
function check(condition, message) {
  if (!condition) throw new CheckFailed(message);
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls `probe` until it returns a truthy value; fails with `what` after `timeoutMs`. */
async function waitFor(what, probe, timeoutMs = 30_000, everyMs = 500) {
  const deadline = Date.now() + timeoutMs;
  let lastError = null;
  while (Date.now() < deadline) {
    try {
      const value = await probe();
      if (value) return value;
    } catch (e) {
      lastError = e;
    }
    await sleep(everyMs);
  }
  throw new CheckFailed(`${what} (waited ${Math.round(timeoutMs / 1000)} s${lastError ? `; last error: ${lastError.message}` : ''})`);
}

function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

const cleanups = [];
async function cleanup() {
  while (cleanups.length) {
    const step = cleanups.pop();
    try {
      await step();
    } catch (e) {
      console.error(`cleanup: ${e.message}`);
    }
  }
}
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    void cleanup().then(() => process.exit(130));
  });
}

/** Starts `cityward demo` in a temporary data directory; stops it and removes the directory at the end. */
async function startNode(bin) {
  check(existsSync(bin), `CITYWARD_BIN ${bin} does not exist`);
  const port = await freePort();
  const data = mkdtempSync(path.join(os.tmpdir(), 'cityward-e2e-data-'));
  const log = path.join(artifacts, 'node.log');
  const out = openSync(log, 'w');
  const child = spawn(bin, ['demo', '--size', 'small', '--listen', `127.0.0.1:${port}`, '--data', data], {
    stdio: ['ignore', out, out],
    detached: true, // its own process group, so that stopping it stops everything it started
  });
  let exited = null;
  child.on('exit', (code, signal) => {
    exited = { code, signal };
  });
  cleanups.push(async () => {
    if (exited === null) {
      try {
        process.kill(-child.pid, 'SIGTERM');
      } catch {
        child.kill('SIGTERM');
      }
      const deadline = Date.now() + 10_000;
      while (exited === null && Date.now() < deadline) await sleep(100);
      if (exited === null) {
        try {
          process.kill(-child.pid, 'SIGKILL');
        } catch {
          child.kill('SIGKILL');
        }
      }
    }
    rmSync(data, { recursive: true, force: true });
  });
  const url = `http://127.0.0.1:${port}`;
  await waitFor(
    `the demo node to answer GET /healthz with 200 (log: ${log})`,
    async () => {
      if (exited) throw new Error(`the node exited (${JSON.stringify(exited)}); see ${log}`);
      const response = await fetch(`${url}/healthz`);
      return response.status === 200;
    },
    180_000,
    500,
  );
  console.log(`node: ${bin} demo on ${url} (data ${data}, log ${log})`);
  return url;
}

const CONTENT_TYPES = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.css': 'text/css; charset=utf-8' };

/** Serves the built console and passes the node's paths through, streaming (for SSE). */
async function startConsoleProxy(dist, nodeUrl) {
  const root = path.resolve(dist);
  check(existsSync(path.join(root, 'index.html')), `CITYWARD_CONSOLE_DIST ${root} has no index.html; run npm run build`);
  const upstream = new URL(nodeUrl);
  const server = http.createServer((req, res) => {
    const pathname = new URL(req.url, 'http://x').pathname;
    if (pathname.startsWith('/api/') || pathname === '/healthz' || pathname.startsWith('/open311/') || pathname === '/metrics') {
      const forward = http.request(
        { host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers: { ...req.headers, host: upstream.host } },
        (answer) => {
          res.writeHead(answer.statusCode ?? 502, answer.headers);
          res.flushHeaders();
          answer.pipe(res);
        },
      );
      forward.on('error', (e) => {
        if (!res.headersSent) res.writeHead(502, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ error: { code: 'unavailable', message: `proxy: ${e.message}` } }));
      });
      // The browser went away (an EventSource closed): stop the upstream request too.
      res.on('close', () => forward.destroy());
      req.pipe(forward);
      return;
    }
    let file = path.join(root, pathname === '/' ? 'index.html' : pathname);
    if (!file.startsWith(root) || !existsSync(file) || !statSync(file).isFile()) file = path.join(root, 'index.html');
    res.writeHead(200, { 'content-type': CONTENT_TYPES[path.extname(file)] ?? 'application/octet-stream', 'cache-control': 'no-store' });
    createReadStream(file).pipe(res);
  });
  const port = await freePort();
  await new Promise((resolve) => server.listen(port, '127.0.0.1', resolve));
  cleanups.push(
    () =>
      new Promise((resolve) => {
        server.closeAllConnections?.();
        server.close(() => resolve());
      }),
  );
  const url = `http://127.0.0.1:${port}`;
  console.log(`console: ${root} served on ${url}, API proxied to ${nodeUrl}`);
  return url;
}

// ---------------------------------------------------------------- the node's API

function makeApi(base) {
  async function call(method, pathname, token, body) {
    const headers = {};
    if (token) headers.Authorization = `Bearer ${token}`;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    const response = await fetch(`${base}${pathname}`, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    const text = await response.text();
    let json = null;
    try {
      json = JSON.parse(text);
    } catch {
      json = text;
    }
    return { status: response.status, body: json };
  }
  return {
    call,
    async login(username) {
      const { status, body } = await call('POST', '/api/v1/login', null, { username, password: PASSWORD });
      check(status === 200 && body.token, `API login as ${username} answered ${status}: ${JSON.stringify(body)}`);
      return body.token;
    },
    async get(pathname, token) {
      const { status, body } = await call('GET', pathname, token);
      check(status === 200, `GET ${pathname} answered ${status}: ${JSON.stringify(body).slice(0, 300)}`);
      return body;
    },
  };
}

// ---------------------------------------------------------------- browser helpers

async function newPage(browser, base, options, offOrigin) {
  const context = await browser.newContext(options);
  const page = await context.newPage();
  // The console must never reach beyond its own node (no tiles, fonts, glyphs).
  page.on('request', (request) => {
    const url = request.url();
    if (!url.startsWith(base) && !url.startsWith('data:') && !url.startsWith('blob:')) offOrigin.push(url);
  });
  page.on('pageerror', (error) => console.error(`  [page error] ${error.message}`));
  await page.goto(base);
  return { context, page };
}

async function signIn(page, username, labels = { user: 'User name', password: 'Password', submit: 'Sign in' }) {
  await page.getByLabel(labels.user, { exact: true }).fill(username);
  await page.getByLabel(labels.password, { exact: true }).fill(PASSWORD);
  await page.getByRole('button', { name: labels.submit }).click();
}

/** Moves keyboard focus off any form field, so that shortcuts reach the console. */
async function blur(page) {
  await page.evaluate(() => (document.activeElement instanceof HTMLElement ? document.activeElement.blur() : undefined));
}

async function smokeAlarm(api, ingestToken, source, tag) {
  const id = `e2e-${tag}-${Date.now()}-${Math.floor(Math.random() * 1e6)}`;
  const event = { id, source, kind: 'smoke', time: new Date().toISOString(), attrs: { alarm: true, value: 0.4 } };
  const { status, body } = await api.call('POST', '/api/v1/events', ingestToken, [event]);
  check(status >= 200 && status < 300, `POST /api/v1/events answered ${status}: ${JSON.stringify(body)}`);
  return id;
}

/** A smoke sensor (from `devices`) that has no open smoke-alarm alert, so an alarm from it raises a new one. */
async function quietSmokeSensor(api, token, devices) {
  const open = await api.get('/api/v1/alerts?status=new,assigned,escalated,transferred,acknowledged,dispatched,on_scene&limit=1000', token);
  const busy = new Set(open.items.filter((a) => a.rule === 'smoke-alarm').map((a) => a.key));
  const smoke = devices.features.filter((f) => f.properties.kind === 'smoke' && !busy.has(f.id));
  check(smoke.length > 0, 'no smoke sensor without an open smoke alarm to raise a new alert from');
  return smoke[Math.floor(Math.random() * smoke.length)].id;
}

async function alertFromEvent(api, token, eventId, timeoutMs = 60_000) {
  return waitFor(
    `an alert with evidence ${eventId} to be raised (GET /api/v1/alerts)`,
    async () => {
      const page = await api.get('/api/v1/alerts?limit=200', token);
      return page.items.find((a) => (a.evidence ?? []).includes(eventId));
    },
    timeoutMs,
    1000,
  );
}

// ---------------------------------------------------------------- scenarios

async function main() {
  let base;
  let apiBase;
  if (process.env.CITYWARD_URL) {
    base = process.env.CITYWARD_URL.replace(/\/$/, '');
    apiBase = base;
  } else {
    const bin = process.env.CITYWARD_BIN;
    if (!bin) {
      console.error('Set CITYWARD_BIN (path of the cityward binary) or CITYWARD_URL (a running demo node serving the console). See the top of this file.');
      process.exit(2);
    }
    apiBase = await startNode(bin);
    if (process.env.CITYWARD_CONSOLE_DIST) {
      base = await startConsoleProxy(path.resolve(process.cwd(), process.env.CITYWARD_CONSOLE_DIST), apiBase);
    } else {
      base = apiBase;
      const index = await (await fetch(`${base}/`)).text();
      check(
        index.includes('/assets/console.js'),
        'the node does not serve the built console at / yet; set CITYWARD_CONSOLE_DIST=dist to serve console/dist from this script',
      );
    }
  }
  const api = makeApi(base);
  check(existsSync(CHROMIUM), `Chromium not found at ${CHROMIUM} (set CHROMIUM)`);
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: !process.env.E2E_HEADFUL,
    args: ['--no-sandbox', '--use-gl=swiftshader', '--enable-unsafe-swiftshader', '--ignore-gpu-blocklist'],
  });
  cleanups.push(() => browser.close());

  const offOrigin = [];
  const results = [];
  const state = {};
  const scenario = async (name, title, body) => {
    const started = Date.now();
    try {
      await body();
      results.push({ name, ok: true });
      console.log(`PASS ${name}: ${title} (${((Date.now() - started) / 1000).toFixed(1)} s)`);
    } catch (e) {
      results.push({ name, ok: false });
      console.log(`FAIL ${name}: ${title}\n     ${e instanceof CheckFailed ? e.message : e.stack}`);
      for (const [label, page] of Object.entries(state.pages ?? {})) {
        const shot = path.join(artifacts, `${name}-${label}.png`);
        await page.screenshot({ path: shot }).catch(() => undefined);
        console.log(`     screenshot: ${shot}`);
      }
    }
  };

  const dispatcherToken = await api.login('dispatcher');
  const ingestToken = await api.login('ingest');
  state.pages = {};

  await scenario('a', 'dispatcher signs in: map with the city layers, queue filled by the demo', async () => {
    const { page } = await newPage(browser, base, { locale: 'en-US', viewport: { width: 1440, height: 900 } }, offOrigin);
    state.pages.desk = page;
    state.desk = page;
    check((await page.getAttribute('html', 'lang')) === 'en', 'an English browser gets <html lang="en">');
    await signIn(page, 'dispatcher');
    await page.waitForSelector('.maplibregl-canvas', { timeout: 30_000 });
    const layers = await waitFor(
      'the map to load every city layer (window.__cityward.map.layers with features)',
      () =>
        page.evaluate(() => {
          const hook = window.__cityward?.map;
          if (!hook?.ready) return null;
          const counts = hook.layers;
          return ['regions', 'grids', 'roads', 'zones', 'devices'].every((n) => counts[n] > 0) ? counts : null;
        }),
      60_000,
    );
    const attribute = await page.getAttribute('.map', 'data-layers-loaded');
    check(attribute === 'regions,grids,roads,zones,devices', `the map reports its loaded layers in data-layers-loaded (got ${attribute})`);
    console.log(`     layers: ${JSON.stringify(layers)}`);
    const rows = await waitFor(
      'the alert queue to fill from the demo within 90 s',
      async () => {
        const n = await page.locator('.queue-list .alert-row').count();
        return n > 0 ? n : null;
      },
      90_000,
      1000,
    );
    const drawn = await page.evaluate(() => window.__cityward?.map?.alertsDrawn ?? 0);
    console.log(`     queue rows: ${rows}, alerts on the map: ${drawn}`);
    check(drawn > 0, 'the alerts of the queue are drawn on the map');
    const countdowns = await page.locator('.queue-list .countdown[data-due]').count();
    check(countdowns > 0, 'open alerts show a countdown to their next deadline');
    const first = await page.locator('.queue-list .countdown[data-due]').first().textContent();
    check(/escalates in \d\d:\d\d|due in|overdue/.test(first ?? ''), `a countdown reads "escalates in mm:ss" or "overdue" (got "${first}")`);
  });

  await scenario('b', 'keyboard: j selects the first alert, a acknowledges it (panel and API agree)', async () => {
    const page = state.desk;
    check(page, 'scenario a left no signed-in page');
    await page.getByLabel('Status', { exact: true }).selectOption('unacked');
    await waitFor('an alert awaiting acknowledgement in the queue', async () => (await page.locator('.queue-list .alert-row').count()) > 0, 120_000, 1000);
    await blur(page);
    await page.keyboard.press('j');
    const selected = page.locator('.queue-list .alert-row.selected');
    await selected.waitFor({ timeout: 5000 });
    const firstId = await page.locator('.queue-list .alert-row').first().getAttribute('data-alert-id');
    const id = await selected.getAttribute('data-alert-id');
    check(id === firstId, `j selects the first alert of the queue (${firstId}), selected ${id}`);
    await page.keyboard.press('a');
    const panel = page.locator(`aside.panel[data-alert-id="${id}"]`);
    await waitFor(
      `the panel shows alert ${id} as acknowledged`,
      async () => (await panel.locator('[data-field=status]').textContent())?.trim() === 'acknowledged',
      20_000,
      250,
    );
    const ackStep = panel.locator('.timeline li[data-action="ack"][data-actor="dispatcher"]');
    check((await ackStep.count()) === 1, 'the panel timeline has an ack step by dispatcher');
    const stored = await api.get(`/api/v1/alerts/${encodeURIComponent(id)}`, dispatcherToken);
    check(stored.status === 'acknowledged', `the API has the alert acknowledged (got ${stored.status})`);
    check(
      stored.handling.timeline.some((s) => s.action === 'ack' && s.actor === 'dispatcher'),
      'the API timeline has the ack step by dispatcher',
    );
    state.ackedId = id;
  });

  await scenario('c', 'live: an alert raised after the page loaded appears without a reload', async () => {
    const page = state.desk;
    check(page, 'scenario a left no signed-in page');
    await page.getByLabel('Status', { exact: true }).selectOption('open');
    await page.evaluate(() => {
      window.__e2eNoReload = true;
    });
    const devices = await api.get('/api/v1/city/layers/devices', dispatcherToken);
    const sensor = await quietSmokeSensor(api, dispatcherToken, devices);
    const eventId = await smokeAlarm(api, ingestToken, sensor, 'live');
    const alert = await alertFromEvent(api, dispatcherToken, eventId);
    await page.locator(`.queue-list .alert-row[data-alert-id="${alert.id}"]`).waitFor({ timeout: 30_000 });
    check(await page.evaluate(() => window.__e2eNoReload === true), 'the page was not reloaded');
    console.log(`     smoke alarm ${eventId} from ${sensor} → alert ${alert.id} listed live`);
  });

  await scenario('f', 'a refused action shows the server message (close without a note)', async () => {
    const page = state.desk;
    check(page, 'scenario a left no signed-in page');
    const id = state.ackedId;
    check(id, 'scenario b left no acknowledged alert to close');
    // The server's own words for this refusal, to compare with what the console shows.
    const refused = await api.call('POST', `/api/v1/alerts/${encodeURIComponent(id)}/close`, dispatcherToken, { disposition: 'false_alarm' });
    check(refused.status === 400, `the API refuses a close without a note (got ${refused.status})`);
    const message = refused.body.error.message;
    const panel = page.locator('aside.panel');
    if ((await panel.getAttribute('data-alert-id')) !== id || (await panel.isHidden())) {
      await page.locator(`.queue-list .alert-row[data-alert-id="${id}"] .row-open`).click();
    }
    await panel.locator('button[data-action="close"]').click();
    const form = panel.locator('form[data-form="close"]');
    await form.getByLabel('Disposition').selectOption('false_alarm');
    await form.locator('button[type=submit]').click();
    const shown = await waitFor('the panel to show the refusal', async () => {
      const text = await panel.locator('.panel-message.error').textContent();
      return text?.trim() ? text : null;
    }, 10_000, 200);
    check(shown.includes(message), `the panel shows the server's message "${message}" (shows "${shown}")`);
    const stored = await api.get(`/api/v1/alerts/${encodeURIComponent(id)}`, dispatcherToken);
    check(stored.status !== 'closed', 'the alert stayed open');
  });

  await scenario('d', 'language: a zh-CN browser gets Chinese; the switcher turns it to English and remembers', async () => {
    const { context, page } = await newPage(browser, base, { locale: 'zh-CN', viewport: { width: 1280, height: 800 } }, offOrigin);
    state.pages.zh = page;
    try {
      await page.getByRole('button', { name: '登录' }).waitFor({ timeout: 15_000 });
      check((await page.getAttribute('html', 'lang')) === 'zh-CN', '<html lang> is zh-CN');
      await page.getByLabel('语言').selectOption('en');
      await page.getByRole('button', { name: 'Sign in' }).waitFor({ timeout: 5000 });
      check((await page.getAttribute('html', 'lang')) === 'en', '<html lang> follows the switch to en');
      await page.reload();
      await page.getByRole('button', { name: 'Sign in' }).waitFor({ timeout: 15_000 });
      // And back: signed in, the header switcher turns the desk Chinese.
      await signIn(page, 'dispatcher');
      await page.getByRole('heading', { name: 'Alert queue' }).waitFor({ timeout: 30_000 });
      await page.getByLabel('Language').selectOption('zh-CN');
      await page.getByRole('heading', { name: '告警队列' }).waitFor({ timeout: 5000 });
      await page.getByRole('button', { name: '退出登录' }).click();
      await page.getByRole('button', { name: '登录' }).waitFor({ timeout: 5000 });
    } finally {
      delete state.pages.zh;
      await context.close();
    }
  });

  await scenario('e', 'responder on a phone: "My alerts" lists only its unit\'s alerts and acknowledges one', async () => {
    const responderToken = await api.login('responder');
    const me = await api.get('/api/v1/me', responderToken);
    check(me.unit, 'the demo responder has a unit');
    // An alert for the responder's community, raised now, so that one awaits acknowledgement.
    const devices = await api.get('/api/v1/city/layers/devices', responderToken);
    const sensor = await quietSmokeSensor(api, responderToken, devices);
    const eventId = await smokeAlarm(api, ingestToken, sensor, 'responder');
    const raised = await alertFromEvent(api, responderToken, eventId);
    check(raised.handling?.owner === me.unit, `the new alert is owned by ${me.unit} (got ${raised.handling?.owner})`);

    const { context, page } = await newPage(browser, base, { locale: 'en-US', viewport: { width: 390, height: 844 }, hasTouch: true, isMobile: true }, offOrigin);
    state.pages.phone = page;
    try {
      await signIn(page, 'responder');
      await page.getByRole('heading', { name: 'My alerts' }).waitFor({ timeout: 30_000 });
      check((await page.locator('.maplibregl-canvas').count()) === 0, 'the phone view does not load the map');
      const card = page.locator(`.my-alerts .card[data-alert-id="${raised.id}"]`);
      await card.waitFor({ timeout: 30_000 });
      const owners = await page.locator('.my-alerts .card').evaluateAll((cards) => cards.map((c) => c.getAttribute('data-owner')));
      check(owners.length > 0 && owners.every((o) => o === me.unit), `every card is owned by ${me.unit} (owners: ${[...new Set(owners)].join(', ')})`);
      // The same set as the API's open alerts owned by the unit (allowing for live changes in between).
      await waitFor('the list to match the API\'s open alerts owned by the unit', async () => {
        const open = await api.get('/api/v1/alerts?status=new,assigned,escalated,transferred,acknowledged,dispatched,on_scene&limit=1000', responderToken);
        const expected = open.items.filter((a) => a.handling?.owner === me.unit).map((a) => a.id).sort();
        const shown = (await page.locator('.my-alerts .card').evaluateAll((cards) => cards.map((c) => c.getAttribute('data-alert-id')))).sort();
        return JSON.stringify(expected) === JSON.stringify(shown);
      }, 20_000, 1000);
      const ack = card.locator('button[data-action="ack"]');
      const box = await ack.boundingBox();
      check(box && box.height >= 44 && box.width >= 44, `the acknowledge button is a large touch target (${box?.width}×${box?.height})`);
      check((await card.locator('a[href^="geo:"]').count()) === 1, 'the card has a geo: navigation link');
      await ack.tap();
      await waitFor('the card to show acknowledged', async () => (await card.locator('.status').textContent())?.trim() === 'acknowledged', 15_000, 250);
      const stored = await api.get(`/api/v1/alerts/${encodeURIComponent(raised.id)}`, responderToken);
      check(stored.status === 'acknowledged', `the API has the responder's alert acknowledged (got ${stored.status})`);
      check(stored.handling.timeline.some((s) => s.action === 'ack' && s.actor === 'responder'), 'the API timeline has the ack by responder');
    } finally {
      delete state.pages.phone;
      await context.close();
    }
  });

  await scenario('g', 'an invalid token anywhere returns to the login form', async () => {
    const page = state.desk;
    check(page, 'scenario a left no signed-in page');
    await page.evaluate(() => sessionStorage.setItem('cityward.token', 'expired-token'));
    await page.reload();
    await page.getByRole('button', { name: 'Sign in' }).waitFor({ timeout: 15_000 });
  });

  await scenario('h', 'no request leaves the node (no tiles, fonts or glyphs from the internet)', async () => {
    check(offOrigin.length === 0, `requests to other origins: ${[...new Set(offOrigin)].slice(0, 5).join(', ')}`);
  });

  const failed = results.filter((r) => !r.ok).map((r) => r.name);
  if (!failed.length && !process.env.E2E_ARTIFACTS) cleanups.unshift(() => rmSync(artifacts, { recursive: true, force: true }));
  console.log(failed.length ? `\n${failed.length} of ${results.length} scenarios failed: ${failed.join(', ')}` : `\nall ${results.length} scenarios passed`);
  return failed.length ? 1 : 0;
}

let code = 1;
try {
  code = await main();
} catch (e) {
  console.error(`e2e: ${e instanceof CheckFailed ? e.message : e.stack}`);
  code = 1;
} finally {
  await cleanup();
}
process.exit(code);
