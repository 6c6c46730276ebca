// What the end-to-end tests (e2e.mjs) and the frame-rate benchmark (fps.mjs) share: checks
// and waiting, starting a demo node and serving the built console in front of it, and
// launching Chromium. The top of e2e.mjs says which environment variables choose what.

import { spawn } from 'node:child_process';
import { createReadStream, existsSync, mkdtempSync, openSync, rmSync, statSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';

export const PASSWORD = 'demo';

// ---------------------------------------------------------------- plumbing

export class CheckFailed extends Error {}

/** Fails the current scenario with a message naming what was expected. */
export function check(condition, message) {
  if (!condition) throw new CheckFailed(message);
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls `probe` until it returns a truthy value; fails with `what` after `timeoutMs`. */
export async function waitFor(what, probe, timeoutMs = 30_000, everyMs = 500) {
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

export function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

export const cleanups = [];
export async function cleanup() {
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

/**
 * Starts `cityward demo --size SIZE` in a temporary data directory, its output in
 * `logDir/node.log`; stops it and removes the directory at the end.
 */
export async function startNode(bin, { size = 'small', logDir }) {
  check(existsSync(bin), `CITYWARD_BIN ${bin} does not exist`);
  const port = await freePort();
  const data = mkdtempSync(path.join(os.tmpdir(), 'cityward-e2e-data-'));
  const log = path.join(logDir, 'node.log');
  const out = openSync(log, 'w');
  const child = spawn(bin, ['demo', '--size', size, '--listen', `127.0.0.1:${port}`, '--data', data], {
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
  console.log(`node: ${bin} demo --size ${size} on ${url} (data ${data}, log ${log})`);
  return url;
}

const CONTENT_TYPES = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.css': 'text/css; charset=utf-8' };

/** Serves the built console and passes the node's paths through, streaming (for SSE). */
export async function startConsoleProxy(dist, nodeUrl) {
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

/**
 * The console to test, from the environment (see the top of e2e.mjs): a running node at
 * CITYWARD_URL, or CITYWARD_BIN started as a demo of `size`, serving the console itself or
 * CITYWARD_CONSOLE_DIST through a proxy. Answers the console's and the API's base URLs.
 */
export async function startTarget({ size = 'small', logDir, usage }) {
  if (process.env.CITYWARD_URL) {
    const base = process.env.CITYWARD_URL.replace(/\/$/, '');
    return { base, apiBase: base };
  }
  const bin = process.env.CITYWARD_BIN;
  if (!bin) {
    console.error(usage);
    process.exit(2);
  }
  const apiBase = await startNode(bin, { size, logDir });
  if (process.env.CITYWARD_CONSOLE_DIST) {
    return { base: await startConsoleProxy(path.resolve(process.cwd(), process.env.CITYWARD_CONSOLE_DIST), apiBase), apiBase };
  }
  const index = await (await fetch(`${apiBase}/`)).text();
  check(
    index.includes('/assets/console.js'),
    'the node does not serve the built console at / yet; set CITYWARD_CONSOLE_DIST=dist to serve console/dist from this script',
  );
  return { base: apiBase, apiBase };
}

/** Debian's Chromium with software WebGL, as the tests and the benchmark run it. */
export async function launchChromium() {
  const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
  check(existsSync(executablePath), `Chromium not found at ${executablePath} (set CHROMIUM)`);
  const browser = await chromium.launch({
    executablePath,
    headless: !process.env.E2E_HEADFUL,
    args: ['--no-sandbox', '--use-gl=swiftshader', '--enable-unsafe-swiftshader', '--ignore-gpu-blocklist'],
  });
  cleanups.push(() => browser.close());
  return browser;
}

/** Signs in through the login form. */
export async function signIn(page, username, labels = { user: 'User name', password: 'Password', submit: 'Sign in' }) {
  await page.getByLabel(labels.user, { exact: true }).fill(username);
  await page.getByLabel(labels.password, { exact: true }).fill(PASSWORD);
  await page.getByRole('button', { name: labels.submit }).click();
}

