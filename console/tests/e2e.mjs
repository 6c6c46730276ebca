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
//       A demo node already running there (users `dispatcher`, `responder`, `analyst`,
//       `ingest` with password `demo`) that serves the console; nothing is started or stopped.
//
// Other settings: CHROMIUM (default /usr/bin/chromium), E2E_HEADFUL=1 to watch,
// E2E_ARTIFACTS (default: a temporary directory) for screenshots of failed checks,
// E2E_ONLY=a,i,j to run some scenarios (most need `a`, which signs the dispatcher in).
//
// Scenarios a–h cover the desk, the live stream, languages and the phone view; i–q the
// pages and layers that need the newer API (filters through the node, rules with trials,
// zones, search, dashboard, live positions, evidence, photos).
//
// Exit code 0 when every scenario passed; otherwise 1, and each failed check is named.

import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { check, CheckFailed, cleanup, cleanups, launchChromium, PASSWORD, signIn, sleep, startTarget, waitFor } from './node.mjs';

const artifacts = process.env.E2E_ARTIFACTS || mkdtempSync(path.join(os.tmpdir(), 'cityward-e2e-artifacts-'));
mkdirSync(artifacts, { recursive: true });

// ---------------------------------------------------------------- the node's API

function makeApi(base) {
  /** `body` goes as JSON, unless `type` is given: then as is, with that Content-Type (YAML). */
  async function call(method, pathname, token, body, type) {
    const headers = {};
    if (token) headers.Authorization = `Bearer ${token}`;
    if (body !== undefined) headers['Content-Type'] = type ?? 'application/json';
    const payload = body === undefined ? undefined : type ? body : JSON.stringify(body);
    const response = await fetch(`${base}${pathname}`, { method, headers, body: payload });
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
  const { base } = await startTarget({
    size: 'small',
    logDir: artifacts,
    usage: 'Set CITYWARD_BIN (path of the cityward binary) or CITYWARD_URL (a running demo node serving the console). See the top of this file.',
  });
  const api = makeApi(base);
  const browser = await launchChromium();

  const offOrigin = [];
  const results = [];
  const state = {};
  const only = process.env.E2E_ONLY ? new Set(process.env.E2E_ONLY.split(',').map((n) => n.trim())) : null;
  const scenario = async (name, title, body) => {
    if (only && !only.has(name)) return;
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
    state.liveAlertId = alert.id;
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
      state.responderAlertId = raised.id;
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


  // ------------------------------------------------------------ pages and layers of the newer API

  const analystToken = await api.login('analyst');
  const auditorToken = await api.login('auditor');

  await scenario('i', 'filters: severity and category go to the node; a live alert outside the filters stays out until they admit it', async () => {
    const page = state.desk;
    check(page, 'scenario a left no signed-in page');
    await page.evaluate(() => (location.hash = '#/'));
    const queue = page.locator('section.queue');
    const asked = (pattern) => page.waitForRequest((r) => r.url().includes('/api/v1/alerts?') && pattern.test(decodeURIComponent(r.url())), { timeout: 10_000 });
    let request = asked(/severity=critical/);
    await page.getByLabel('Status', { exact: true }).selectOption('open');
    await queue.getByLabel('critical', { exact: true }).check();
    await request;
    await waitFor('the queue to show only critical alerts', async () => {
      if ((await queue.getAttribute('data-loading')) === 'true') return false;
      const severities = await page.locator('.queue-list .alert-row').evaluateAll((rows) => rows.map((r) => r.getAttribute('data-severity')));
      return severities.every((s) => s === 'critical');
    }, 15_000, 250);
    // A category that smoke alarms are not in: a new smoke alarm must not be listed.
    request = asked(/category=traffic\.speeding/);
    await queue.getByLabel('Category', { exact: true }).fill('traffic.speeding');
    await request;
    const devices = await api.get('/api/v1/city/layers/devices', dispatcherToken);
    const sensor = await quietSmokeSensor(api, dispatcherToken, devices);
    const eventId = await smokeAlarm(api, ingestToken, sensor, 'filters');
    const alert = await alertFromEvent(api, dispatcherToken, eventId);
    check(alert.severity === 'critical', `the demo's smoke alarms are critical (got ${alert.severity})`);
    await sleep(2000);
    check((await page.locator(`.queue-list .alert-row[data-alert-id="${alert.id}"]`).count()) === 0, `alert ${alert.id} (${alert.category}) is not listed under category traffic.speeding`);
    const rows = await page.locator('.queue-list .alert-row .row-category').allTextContents();
    check(rows.every((c) => c === 'traffic.speeding'), `every listed alert is in category traffic.speeding (got ${[...new Set(rows)].join(', ')})`);
    // The node answers the same filters the same way.
    const fromNode = await api.get('/api/v1/alerts?status=new,assigned,escalated,transferred,acknowledged,dispatched,on_scene&severity=critical&category=traffic.speeding&limit=500', dispatcherToken);
    check(fromNode.items.every((a) => a.severity === 'critical' && a.category === 'traffic.speeding'), 'GET /api/v1/alerts applies severity and category itself');
    // Its own category: the node's answer brings the alert in.
    request = asked(new RegExp(`category=${alert.category.replace('.', '\\.')}`));
    await queue.getByLabel('Category', { exact: true }).fill(alert.category);
    await request;
    await page.locator(`.queue-list .alert-row[data-alert-id="${alert.id}"]`).waitFor({ timeout: 15_000 });
    // A region: every listed alert is one the node lists for that region too.
    const region = await page.locator('select[name=region] option').nth(1).getAttribute('value');
    check(region, 'the region filter lists the city\'s regions');
    request = asked(new RegExp(`region=${region}`));
    await page.locator('select[name=region]').selectOption(region);
    await request;
    await waitFor(`the queue to match the node's answer for region ${region}`, async () => {
      if ((await queue.getAttribute('data-loading')) === 'true') return false;
      const expected = await api.get(`/api/v1/alerts?status=new,assigned,escalated,transferred,acknowledged,dispatched,on_scene&severity=critical&category=${encodeURIComponent(alert.category)}&region=${encodeURIComponent(region)}&limit=500`, dispatcherToken);
      const shown = await page.locator('.queue-list .alert-row').evaluateAll((r) => r.map((row) => row.getAttribute('data-alert-id')));
      return JSON.stringify(expected.items.map((a) => a.id).sort()) === JSON.stringify(shown.sort());
    }, 20_000, 1000);
    // Back to the defaults, for the scenarios after this one.
    await page.locator('select[name=region]').selectOption('');
    await queue.getByLabel('Category', { exact: true }).fill('');
    await queue.getByLabel('critical', { exact: true }).uncheck();
    await waitFor('the queue to fill again without filters', async () => (await page.locator('.queue-list .alert-row').count()) > 0, 15_000, 250);
  });

  await scenario('j', 'rules: the node\'s refusal shows under the editor with its line marked; switching a rule off and saving an edit work', async () => {
    const { context, page } = await newPage(browser, base, { locale: 'en-US', viewport: { width: 1440, height: 900 } }, offOrigin);
    state.pages.analyst = page;
    state.analyst = { context, page };
    await signIn(page, 'analyst');
    await page.getByRole('link', { name: 'Rules' }).click();
    await page.locator('tr[data-rule-id="smoke-alarm"]').waitFor({ timeout: 30_000 });
    await page.locator('button[data-open-rule="smoke-alarm"]').click();
    const editor = page.locator('textarea[data-editor]');
    await editor.waitFor();
    const text = await editor.inputValue();
    check(/^kind:/m.test(text), `the editor holds the rule as YAML (got ${JSON.stringify(text.slice(0, 80))})`);
    const broken = text.replace(/^kind:.*$/m, 'kind: no-such-kind');
    const stored = (await api.get('/api/v1/rules', analystToken)).items.find((r) => r.id === 'smoke-alarm');
    const refused = await api.call('PUT', `/api/v1/rules/smoke-alarm?version=${stored.version}`, analystToken, broken, 'application/yaml');
    check(refused.status === 400, `the node refuses an unknown kind with 400 (got ${refused.status})`);
    const message = refused.body.error.message;
    await editor.fill(broken);
    await page.locator('button[data-action="save-rule"]').click();
    const box = page.locator('.editor-error');
    const shown = await waitFor('the refusal under the editor', async () => ((await box.textContent())?.trim() ? box.textContent() : null), 10_000, 200);
    check(shown.includes(message), `the editor shows the node's message "${message}" (shows "${shown}")`);
    const line = /\bline (\d+)/.exec(message)?.[1];
    if (line) {
      check((await box.getAttribute('data-line')) === line, `the error names line ${line}`);
      const marked = await page.locator('.code-numbers div.marked').allTextContents();
      check(marked.length === 1 && marked[0] === line, `line ${line} is marked in the gutter (marked: ${marked.join(', ')})`);
    } else {
      console.log(`     (the node's message names no line: "${message}")`);
    }
    check((await api.get('/api/v1/rules', analystToken)).items.find((r) => r.id === 'smoke-alarm').version === stored.version, 'the refused rule kept its version');
    await page.getByRole('button', { name: 'Undo changes' }).click();

    // Off and on again with the switch in the list, on another rule than the smoke alarm.
    const other = (await api.get('/api/v1/rules', analystToken)).items.find((r) => r.id !== 'smoke-alarm' && r.enabled);
    check(other, 'the demo has an enabled rule besides smoke-alarm');
    const toggle = page.locator(`input[data-toggle="${other.id}"]`);
    await toggle.uncheck();
    const off = await waitFor(`rule ${other.id} switched off in the node`, async () => {
      const r = (await api.get('/api/v1/rules', analystToken)).items.find((x) => x.id === other.id);
      return r.enabled === false ? r : null;
    }, 10_000, 300);
    check(off.version === other.version + 1, `switching off made version ${other.version + 1} (got ${off.version})`);
    await page.locator(`input[data-toggle="${other.id}"]`).check();
    await waitFor(`rule ${other.id} switched on again`, async () => (await api.get('/api/v1/rules', analystToken)).items.find((x) => x.id === other.id).enabled === true, 10_000, 300);

    // A valid edit of that rule through the editor.
    await page.locator(`button[data-open-rule="${other.id}"]`).click();
    await page.locator(`.rule-editor[data-rule="${other.id}"]`).waitFor();
    const before = (await api.get('/api/v1/rules', analystToken)).items.find((x) => x.id === other.id);
    const otherText = await editor.inputValue();
    await editor.fill(`${otherText.replace(/\s*$/, '')}\n# checked by the e2e test\n`);
    await page.locator('button[data-action="save-rule"]').click();
    await page.locator('.rule-editor p.ok').waitFor({ timeout: 10_000 });
    const after = (await api.get('/api/v1/rules', analystToken)).items.find((x) => x.id === other.id);
    check(after.version === before.version + 1, `saving made version ${before.version + 1} (got ${after.version})`);
  });

  await scenario('k', 'rules: a trial on the last 24 h shows its progress, then its result, and its alerts on the map', async () => {
    const page = state.analyst?.page;
    check(page, 'scenario j left no analyst page');
    await page.locator('button[data-open-rule="smoke-alarm"]').click();
    await page.locator('.rule-editor[data-rule="smoke-alarm"]').waitFor();
    let last = null;
    const onResponse = async (response) => {
      if (!response.url().includes('/api/v1/jobs/')) return;
      try {
        last = await response.json();
      } catch {
        // A response cut short: the next poll brings the state.
      }
    };
    page.on('response', onResponse);
    try {
      await page.locator('button[data-action="trial"]').click();
      await page.locator('.trial progress').waitFor({ timeout: 10_000 });
      const trial = page.locator('.trial');
      const state_ = await waitFor('the trial to finish (done or failed)', async () => {
        const s = await trial.getAttribute('data-state');
        return s === 'done' || s === 'failed' ? s : null;
      }, 300_000, 500);
      check(state_ === 'done', `the trial finished (state ${state_}: ${await trial.textContent()})`);
      check(last?.state === 'done' && last.result, 'GET /api/v1/jobs/{id} answered the result');
      const summary = await page.locator('.trial-summary').textContent();
      check(summary.includes(`would have raised ${last.result.alerts.toLocaleString('en')}`), `the summary gives the alert count ${last.result.alerts} ("${summary}")`);
      const placed = last.result.items.filter((i) => typeof i.lon === 'number' && typeof i.lat === 'number').length;
      const drawn = await page.evaluate(() => window.__cityward?.map?.overlays.trial ?? 0);
      check(drawn === placed, `the map draws the trial's ${placed} placed alerts (draws ${drawn})`);
      if (placed) {
        await page.locator('button[data-action="clear-trial"]').click();
        await waitFor('the trial layer to be cleared', async () => !(await page.evaluate(() => window.__cityward?.map?.overlays.trial)), 5000, 200);
      }
      console.log(`     trial: ${last.result.events} events, ${last.result.alerts} alerts, ${last.result.by_grid.length} grids`);
    } finally {
      page.off('response', onResponse);
    }
  });

  await scenario('l', 'zones: an analyst draws an area, names and saves it, and deletes it; a dispatcher has no zone tool', async () => {
    const page = state.analyst?.page;
    check(page, 'scenario j left no analyst page');
    check((await state.desk?.locator('.zone-tool').count()) === 0, 'the dispatcher sees no zone tool');
    await page.getByRole('link', { name: 'Alerts' }).click();
    await page.waitForFunction(() => window.__cityward?.map?.ready, null, { timeout: 30_000 });
    const before = (await api.get('/api/v1/city/layers/zones', analystToken)).features.length;
    await page.getByRole('button', { name: 'Edit zones' }).click();
    await page.locator('button[data-zone-new="polygon"]').click();
    const box = await page.locator('.map .maplibregl-canvas').boundingBox();
    const cx = box.x + box.width / 2;
    const cy = box.y + box.height / 2;
    for (const [dx, dy] of [[-70, -50], [70, -50], [70, 50]]) {
      await page.mouse.click(cx + dx, cy + dy);
      await sleep(150);
    }
    await page.mouse.dblclick(cx - 70, cy + 50);
    await page.locator('.zone-form .zone-points', { hasText: '4 points' }).waitFor({ timeout: 5000 });
    // Drag one corner a little: editing after drawing.
    await page.mouse.move(cx + 70, cy - 50);
    await page.mouse.down();
    await page.mouse.move(cx + 90, cy - 70, { steps: 6 });
    await page.mouse.up();
    const name = `e2e zone ${Date.now()}`;
    await page.locator('input[name="zone-name"]').fill(name);
    // A kind of its own, so that no rule of the demo starts watching the test's zone.
    await page.locator('input[name="zone-kind"]').fill('e2e');
    const id = await page.locator('input[name="zone-id"]').inputValue();
    check(/^e2e-zone-\d+$/.test(id), `the id follows the name (got ${id})`);
    await page.getByRole('button', { name: 'Save zone' }).click();
    await page.locator('.zone-message.ok', { hasText: 'saved' }).waitFor({ timeout: 10_000 });
    const zones = await api.get('/api/v1/city/layers/zones', analystToken);
    const saved = zones.features.find((f) => String(f.id) === id || f.properties.id === id);
    check(saved, `GET /api/v1/city/layers/zones lists ${id}`);
    check(saved.geometry.type === 'Polygon' && saved.geometry.coordinates[0].length === 5, `the zone is a closed Polygon of 4 corners (${JSON.stringify(saved.geometry).slice(0, 120)})`);
    check(saved.properties.name === name && saved.properties.kind === 'e2e', 'the zone keeps its name and kind');
    check(zones.features.length === before + 1, `one zone more (${before} → ${zones.features.length})`);
    await waitFor('the map to reload the zones layer', async () => (await page.evaluate(() => window.__cityward?.map?.layers.zones)) === before + 1, 5000, 200);
    await page.locator(`button[data-zone-delete="${id}"]`).click();
    await page.locator(`li[data-zone-id="${id}"] button[data-confirm="yes"]`).click();
    await page.locator('.zone-message.ok', { hasText: 'deleted' }).waitFor({ timeout: 10_000 });
    const after = await api.get('/api/v1/city/layers/zones', analystToken);
    check(!after.features.some((f) => String(f.id) === id), `the zone ${id} is gone from the node`);
  });

  await scenario('m', 'search: a partial plate with a case number and legal basis lists matching events in the table and on the map; CSV export downloads the same search', async () => {
    const page = state.analyst?.page;
    check(page, 'scenario j left no analyst page');
    // The form's "until" has minute resolution: search up to the last full minute, once the
    // demo has a plate read before it (a node started a minute ago may have none yet). The
    // same search asked again of the API must then find the same events.
    const { plate, until } = await waitFor('a plate read before the last full minute', async () => {
      const until = new Date(Math.floor(Date.now() / 60_000) * 60_000);
      const sample = await api.call('POST', '/api/v1/search', analystToken, {
        kind: 'plate_read',
        limit: 20,
        since: new Date(until - 3600e3).toISOString(),
        until: until.toISOString(),
        purpose: { case_number: 'E2E-1', legal_basis: 'criminal_investigation' },
      });
      check(sample.status === 200, `POST /api/v1/search answered ${sample.status}: ${JSON.stringify(sample.body).slice(0, 200)}`);
      const plate = sample.body.items.map((e) => e.attrs?.plate).find((p) => typeof p === 'string' && p.length >= 4);
      return plate ? { plate, until } : null;
    }, 90_000, 2_000);
    const pattern = `${plate.slice(0, plate.length - 2)}*`;
    await page.getByRole('link', { name: 'Search' }).click();
    await page.getByLabel('Plate', { exact: true }).fill(pattern);
    await page.getByLabel('Kind', { exact: true }).fill('plate_read');
    const pad = (n) => String(n).padStart(2, '0');
    const local = `${until.getFullYear()}-${pad(until.getMonth() + 1)}-${pad(until.getDate())}T${pad(until.getHours())}:${pad(until.getMinutes())}`;
    await page.getByLabel('Until', { exact: true }).fill(local);
    // Without a purpose a plate is refused, with the reason shown.
    const refused = page.waitForResponse((r) => r.url().endsWith('/api/v1/search') && r.request().method() === 'POST', { timeout: 20_000 });
    await page.locator('button[data-action="search"]').click();
    check((await refused).status() === 400, 'a plate search without a purpose is refused');
    await page.locator('.search-status.error', { hasText: 'legal_basis' }).waitFor({ timeout: 10_000 });
    await page.getByLabel('Case number', { exact: true }).fill('E2E-2026-1');
    await page.getByLabel('Legal basis', { exact: true }).selectOption({ label: 'Criminal investigation' });
    const answered = page.waitForResponse((r) => r.url().endsWith('/api/v1/search') && r.request().method() === 'POST', { timeout: 20_000 });
    await page.locator('button[data-action="search"]').click();
    const response = await answered;
    const body = JSON.parse(response.request().postData() ?? '{}');
    const found = (await response.json()).items?.length ?? 0;
    check(body.plate === pattern && body.kind === 'plate_read' && body.limit === 500 && body.since && body.until, `the search sends plate, kind, time and limit (${JSON.stringify(body)})`);
    check(body.purpose?.case_number === 'E2E-2026-1' && body.purpose?.legal_basis === 'criminal_investigation', `the search sends its purpose (${JSON.stringify(body.purpose)})`);
    const results = page.locator('.search-results');
    // The table of the answer (not of an earlier search, whose count may still be shown).
    const count = Number(await waitFor(`the table to list the ${found} events found`, async () => (await results.getAttribute('data-count')) === String(found) && String(found), 20_000, 250));
    check(count > 0, `the search for ${pattern} found events`);
    const plates = await page.locator('.search-table td.plate').allTextContents();
    const re = new RegExp(`^${pattern.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.')}$`, 'i');
    check(plates.every((p) => re.test(p)), `every plate matches ${pattern} (${[...new Set(plates)].slice(0, 5).join(', ')})`);
    const expected = await api.call('POST', '/api/v1/search', analystToken, body);
    check(Math.abs(expected.body.items.length - count) <= 2, `the table lists what the node finds for the same search (${count} shown, ${expected.body.items.length} from the API)`);
    const onMap = await page.evaluate(() => window.__cityward?.map?.overlays.search ?? 0);
    check(onMap > 0, `the results are drawn on the map (${onMap})`);
    const [download] = await Promise.all([page.waitForEvent('download', { timeout: 20_000 }), page.locator('button[data-action="export-csv"]').click()]);
    check(/\.csv$/.test(download.suggestedFilename()), `the download is a .csv file (${download.suggestedFilename()})`);
    const csv = readFileSync(await download.path(), 'utf8');
    const lines = csv.trim().split(/\r?\n/);
    check(lines.length >= 2, `the CSV has a header and rows (${lines.length} lines)`);
    const firstId = await page.locator('.search-table tbody tr').first().getAttribute('data-event-id');
    check(csv.includes(firstId) || csv.includes(plates[0]), `the CSV holds the first result (${firstId})`);
    const audit = await api.get('/api/v1/audit?action=search&limit=50', auditorToken);
    check(audit.items.some((e) => e.actor === 'analyst' && e.detail?.purpose?.case_number === 'E2E-2026-1' && e.detail?.plate === pattern), 'the search is in the audit log with its case number');
    await page.getByRole('button', { name: 'Clear' }).click();
  });

  await scenario('n', 'dashboard: the charts are drawn from GET /api/v1/stats, in English and Chinese', async () => {
    const page = state.analyst?.page;
    check(page, 'scenario j left no analyst page');
    const until = new Date();
    const stats = await api.get(`/api/v1/stats?since=${new Date(until - 86400e3).toISOString()}&until=${until.toISOString()}&bucket=hour`, analystToken);
    await page.getByRole('link', { name: 'Dashboard' }).click();
    for (const name of ['alerts_over_time', 'alerts_by_region', 'deadline_compliance', 'false_alarm_rate', 'devices']) {
      await page.locator(`[data-chart="${name}"]`).waitFor({ timeout: 20_000 });
    }
    if (stats.alerts_over_time.length) {
      const bars = await page.locator('[data-chart="alerts_over_time"] svg rect.bar').count();
      check(bars > 0, 'alerts over time are drawn as bars');
    }
    if (stats.alerts_by_region.some((r) => r.count > 0)) {
      check((await page.locator('[data-chart="alerts_by_region"] svg rect.bar').count()) > 0, 'alerts by region are drawn as bars');
    }
    check((await page.locator('[data-chart="devices"] svg, [data-chart="devices"] .empty-chart').count()) > 0, 'devices offline are drawn');
    check((await page.locator('[data-chart="alerts_over_time"] svg text.axis-label').allTextContents()).includes('Alerts'), 'the y axis is labelled');
    await page.getByLabel('Language').selectOption('zh-CN');
    await page.getByRole('heading', { name: '告警趋势（按类别）' }).waitFor({ timeout: 5000 });
    await page.getByLabel('语言').selectOption('en');
    await page.getByRole('heading', { name: 'Alerts over time, by category' }).waitFor({ timeout: 5000 });
  });

  await scenario('o', 'positions: the vehicles and responders layer is updated every second, and stops when both are off', async () => {
    const page = state.desk;
    check(page, 'scenario a left no signed-in page');
    await page.evaluate(() => (location.hash = '#/'));
    const answer = await api.get('/api/v1/city/positions', dispatcherToken);
    check(answer.type === 'FeatureCollection', 'GET /api/v1/city/positions answers a FeatureCollection');
    await waitFor('the positions layer to go live', async () => (await page.evaluate(() => window.__cityward?.map?.positionsState)) === 'live', 15_000, 250);
    const first = await page.evaluate(() => window.__cityward.map.positionUpdates);
    await sleep(3500);
    const updates = (await page.evaluate(() => window.__cityward.map.positionUpdates)) - first;
    check(updates >= 2, `at least 2 updates in 3.5 s (got ${updates})`);
    const drawn = await page.evaluate(() => window.__cityward.map.positions);
    check(Math.abs(drawn - answer.features.length) <= Math.max(5, answer.features.length * 0.1), `the layer holds the node's positions (${drawn} drawn, ${answer.features.length} from the API)`);
    await page.locator('#layer-vehicles').uncheck();
    await page.locator('#layer-responders').uncheck();
    await sleep(1200);
    const stopped = await page.evaluate(() => window.__cityward.map.positionUpdates);
    await sleep(2500);
    check((await page.evaluate(() => window.__cityward.map.positionUpdates)) === stopped, 'no polling while both layers are off');
    await page.locator('#layer-vehicles').check();
    await page.locator('#layer-responders').check();
    await waitFor('polling to resume', async () => (await page.evaluate(() => window.__cityward.map.positionUpdates)) > stopped, 5000, 250);
    console.log(`     positions: ${drawn} features, ${updates} updates in 3.5 s`);
  });

  await scenario('p', 'alert page: the evidence events are drawn on a small map of their own', async () => {
    const page = state.desk;
    const id = state.liveAlertId;
    check(page && id, 'scenario c left no alert with evidence');
    const alert = await api.get(`/api/v1/alerts/${encodeURIComponent(id)}`, dispatcherToken);
    // The evidence in one call; a node without it answers each event on its own.
    const evidence = await api.call('GET', `/api/v1/alerts/${encodeURIComponent(id)}/evidence`, dispatcherToken);
    const event =
      evidence.status === 200
        ? evidence.body.items.find((e) => e.id === alert.evidence[0])
        : await api.get(`/api/v1/events/${encodeURIComponent(alert.evidence[0])}`, dispatcherToken);
    check(event?.id === alert.evidence[0], `the node answers the evidence event ${alert.evidence[0]} (evidence call: ${evidence.status})`);
    await page.evaluate(() => (location.hash = '#/'));
    await page.locator(`.queue-list .alert-row[data-alert-id="${id}"] .row-open`).click();
    const panel = page.locator(`aside.panel[data-alert-id="${id}"]`);
    await panel.locator(`.evidence-list li[data-event-id="${event.id}"]`).waitFor({ timeout: 15_000 });
    if (typeof event.lon === 'number') {
      await panel.locator('.evidence-map[data-points] canvas').waitFor({ timeout: 15_000 });
      check(Number(await panel.locator('.evidence-map').getAttribute('data-points')) >= 1, 'the evidence map draws the event');
    }
  });

  await scenario('q', 'responder on a phone: a photo is attached while resolving', async () => {
    const id = state.responderAlertId;
    check(id, 'scenario e left no alert of the responder');
    const { context, page } = await newPage(browser, base, { locale: 'en-US', viewport: { width: 390, height: 844 }, hasTouch: true, isMobile: true }, offOrigin);
    state.pages.phone = page;
    try {
      await signIn(page, 'responder');
      const card = page.locator(`.my-alerts .card[data-alert-id="${id}"]`);
      await card.waitFor({ timeout: 30_000 });
      const input = card.locator('input[type=file][data-photo-input]');
      check((await input.getAttribute('capture')) === 'environment' && (await input.getAttribute('accept')) === 'image/*', 'the photo input asks for the camera');
      // The smallest PNG there is: one transparent pixel.
      const png = Buffer.from('iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==', 'base64');
      const uploaded = page.waitForResponse((r) => r.url().includes(`/api/v1/alerts/${encodeURIComponent(id)}/photos`), { timeout: 15_000 });
      await input.setInputFiles({ name: 'scene.png', mimeType: 'image/png', buffer: png });
      const response = await uploaded;
      check(response.status() === 201, `POST …/photos answered 201 (got ${response.status()})`);
      await card.locator('.photos li[data-state="sent"]').waitFor({ timeout: 10_000 });
      await card.getByLabel('Resolution note').fill('resolved with a photo (e2e)');
      await card.locator('button[data-action="resolve"]').tap();
      await waitFor('the alert to be resolved', async () => (await api.get(`/api/v1/alerts/${encodeURIComponent(id)}`, dispatcherToken)).status === 'resolved', 15_000, 500);
    } finally {
      delete state.pages.phone;
      await context.close();
    }
    // The dispatcher sees the photo on the alert's page, loaded with their own token.
    const desk = state.desk;
    check(desk, 'scenario a left no signed-in page');
    await desk.evaluate(() => (location.hash = '#/'));
    await desk.getByLabel('Status', { exact: true }).selectOption('resolved');
    try {
      await desk.locator(`.queue-list .alert-row[data-alert-id="${id}"] .row-open`).click({ timeout: 15_000 });
      const img = desk.locator(`aside.panel[data-alert-id="${id}"] .photo-gallery img`);
      await img.waitFor({ timeout: 15_000 });
      await waitFor('the photo to be decoded', async () => (await img.evaluate((el) => el.complete && el.naturalWidth)) === 1, 10_000, 250);
      check(/Photos \(1\)/.test(await desk.locator(`aside.panel[data-alert-id="${id}"] .photo-gallery h3`).textContent()), 'the page says how many photos there are');
    } finally {
      await desk.getByLabel('Status', { exact: true }).selectOption('open');
    }
  });

  await scenario('r', 'accountability: a supervisor approves a search beyond a dispatcher\'s limits in the console; the auditor sees it in the log and the transparency report', async () => {
    // A dispatcher may search one day without approval: three days wait for a supervisor.
    const since = new Date(Date.now() - 3 * 86400e3).toISOString();
    const asked = await api.call('POST', '/api/v1/search', dispatcherToken, {
      plate: '粤*',
      since,
      purpose: { case_number: 'E2E-APPROVE-1', legal_basis: 'missing_person' },
    });
    check(asked.status === 202 && asked.body.approval?.status === 'pending', `an over-limit search waits for approval (${asked.status}: ${JSON.stringify(asked.body).slice(0, 200)})`);
    const id = asked.body.approval.id;
    const { context, page } = await newPage(browser, base, { locale: 'en-US', viewport: { width: 1440, height: 900 } }, offOrigin);
    state.pages.supervisor = page;
    try {
      await signIn(page, 'supervisor');
      await page.getByRole('link', { name: 'Search' }).click();
      const row = page.locator(`.request-list li[data-approval="${id}"]`);
      await row.waitFor({ timeout: 15_000 });
      check((await row.textContent()).includes('dispatcher'), 'the request names who asked');
      await row.getByLabel('Reason').fill('missing child, case file seen (e2e)');
      await row.locator('button[data-action="approve"]').click();
      await page.locator(`.request-list li[data-approval="${id}"][data-status="approved"]`).waitFor({ timeout: 10_000 });
    } finally {
      delete state.pages.supervisor;
      await context.close();
    }
    const run = await api.call('POST', '/api/v1/search', dispatcherToken, { approval: id, limit: 5 });
    check(run.status === 200 && Array.isArray(run.body.items), `the dispatcher runs the approved search (${run.status})`);

    const auditor = await newPage(browser, base, { locale: 'en-US', viewport: { width: 1440, height: 900 } }, offOrigin);
    state.pages.auditor = auditor.page;
    try {
      await signIn(auditor.page, 'auditor');
      await auditor.page.getByRole('link', { name: 'Audit' }).click();
      await auditor.page.locator('.audit-chain[data-intact="true"]').waitFor({ timeout: 15_000 });
      await auditor.page.getByLabel('Action', { exact: true }).fill('search.approve');
      await auditor.page.locator('button[data-action="audit-filter"]').click();
      await auditor.page.locator('.audit-table tbody tr', { hasText: 'missing child' }).waitFor({ timeout: 10_000 });
      const report = auditor.page.locator('[data-report="personal_searches"]');
      await report.locator('tbody tr', { hasText: 'Missing person' }).waitFor({ timeout: 10_000 });
      check(!(await auditor.page.locator('.transparency').textContent()).includes('E2E-APPROVE-1'), 'the transparency report shows no case number');
    } finally {
      delete state.pages.auditor;
      await auditor.context.close();
    }
  });

  await scenario('s', 'sharing: an administrator grants a community\'s plate reads to a street in the console; the street analyst\'s search under it is listed to the community; a legal hold is placed and released', async () => {
    const me = async (user) => api.get('/api/v1/me', await api.login(user));
    const owner = (await me('responder')).unit;
    const grantee = (await me('street-analyst')).unit;
    check(owner && grantee && owner !== grantee, `the demo's responder and street analyst are in different units (${owner}, ${grantee})`);
    const streetToken = await api.login('street-analyst');
    const since = new Date(Date.now() - 86400e3).toISOString();
    const search = { kind: 'plate_read', since, limit: 5, purpose: { case_number: 'E2E-SHARE-1', legal_basis: 'criminal_investigation' } };
    const before = await api.call('POST', '/api/v1/search', streetToken, search);
    check(before.status === 200, `the street analyst searches its own street (${before.status}: ${JSON.stringify(before.body).slice(0, 200)})`);

    const admin = await newPage(browser, base, { locale: 'en-US', viewport: { width: 1440, height: 900 } }, offOrigin);
    state.pages.admin = admin.page;
    const page = admin.page;
    page.on('dialog', (dialog) => void dialog.accept());
    try {
      await signIn(page, 'admin');
      await page.getByRole('link', { name: 'Sharing' }).click();
      const form = page.locator('form[data-form="grant"]');
      await form.waitFor({ timeout: 15_000 });
      await form.getByLabel('Data of (owner)').fill(owner);
      await form.getByLabel('Shared with').fill(grantee);
      await form.getByLabel('Data classes').fill('plate_read');
      await form.getByLabel('Criminal investigation').check();
      await form.getByLabel('Until', { exact: true }).fill('2031-01-01T00:00');
      await form.getByLabel('Reason', { exact: true }).fill('joint operation (e2e)');
      await form.locator('button[data-action="make-grant"]').click();
      await page.locator('.grants-table tbody tr', { hasText: 'joint operation (e2e)' }).waitFor({ timeout: 10_000 });
      const grants = await api.get('/api/v1/grants', await api.login('admin'));
      const grant = grants.items.find((g) => g.reason === 'joint operation (e2e)');
      check(grant && grant.owner === owner && grant.grantee === grantee && grant.purposes.join() === 'criminal_investigation', `the console made the grant asked for: ${JSON.stringify(grant)}`);

      const under = await api.call('POST', '/api/v1/search', streetToken, search);
      check(under.status === 200, `the street analyst searches under the grant (${under.status})`);

      // The owner's member sees that search under the grant.
      const responder = await newPage(browser, base, { locale: 'en-US', viewport: { width: 1440, height: 900 } }, offOrigin);
      state.pages.responder = responder.page;
      try {
        await signIn(responder.page, 'responder');
        await responder.page.getByRole('link', { name: 'Sharing' }).click();
        const row = responder.page.locator(`tr[data-grant="${grant.id}"]`);
        await row.waitFor({ timeout: 15_000 });
        check(!(await responder.page.locator('form[data-form="grant"]').count()), 'only administrators get the grant form');
        await row.locator('button[data-action="grant-accesses"]').click();
        const accesses = responder.page.locator(`tr[data-accesses="${grant.id}"]`);
        await accesses.locator('li', { hasText: 'E2E-SHARE-1' }).waitFor({ timeout: 10_000 });
        check((await accesses.textContent()).includes('street-analyst'), 'the access names who searched');
      } finally {
        delete state.pages.responder;
        await responder.context.close();
      }

      // A legal hold, placed and released.
      const hold = page.locator('form[data-form="hold"]');
      await hold.getByLabel('Case number').fill('E2E-HOLD-1');
      await hold.getByLabel('Reason (order, investigation)').fill('court order (e2e)');
      await hold.getByLabel('Kinds (empty: all)').fill('plate_read');
      await hold.getByLabel('From').fill('2026-01-01T00:00');
      await hold.getByLabel('Until', { exact: true }).fill('2026-01-02T00:00');
      await hold.locator('button[data-action="place-hold"]').click();
      const held = page.locator('.holds-table tbody tr', { hasText: 'E2E-HOLD-1' });
      await held.waitFor({ timeout: 10_000 });
      await held.locator('button[data-action="release-hold"]').click();
      await page.locator('.holds-table tbody tr', { hasText: 'released by admin' }).waitFor({ timeout: 10_000 });
      await page.locator(`tr[data-grant="${grant.id}"] button[data-action="revoke-grant"]`).click();
      await page.locator(`tr[data-grant="${grant.id}"]`, { hasText: 'revoked' }).waitFor({ timeout: 10_000 });
    } finally {
      delete state.pages.admin;
      await admin.context.close();
    }
  });

  if (state.analyst) {
    delete state.pages.analyst;
    await state.analyst.context.close();
  }

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
