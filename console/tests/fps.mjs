// Frame-rate benchmark of the console's map: a large demo city (20,000 devices, about
// 1,000 vehicles moving every second) in headless Chromium with software WebGL, panned and
// zoomed with the mouse for a while as positions keep arriving. Prints one JSON line:
//
//   {"fps_mean", "fps_p5", "frames", "devices", "vehicles", …}
//
// fps_mean is frames per second over the whole run, counted with requestAnimationFrame in
// the page; fps_p5 is the 5th percentile of the per-frame rate (1000 / the frame's
// interval), i.e. how slow the slowest 5 % of frames were. A benchmark, not a test: it
// passes or fails nothing (exit code 0 unless it could not run).
//
// How to run (from console/, after `npm run build`), like tests/e2e.mjs:
//
//   CITYWARD_BIN=/path/to/cityward CITYWARD_CONSOLE_DIST=dist node tests/fps.mjs
//   CITYWARD_URL=http://127.0.0.1:8080 node tests/fps.mjs      (a demo node already running)
//
// The console lowers its resolution while the map moves and frames are slow (see
// src/resolution.ts); lowest_render_scale says how far it went, and FPS_FULL_RESOLUTION=1
// measures without it.
//
// Settings: FPS_SIZE (demo city size, default large), FPS_SECONDS (default 10),
// FPS_USER (default dispatcher), FPS_WIDTH × FPS_HEIGHT (viewport, default 1440 × 900),
// CHROMIUM, E2E_HEADFUL=1 to watch, FPS_LOGS (default: a temporary directory) for the
// node's log.

import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { cleanup, cleanups, launchChromium, signIn, sleep, startTarget, waitFor } from './node.mjs';

const SIZE = process.env.FPS_SIZE || 'large';
const SECONDS = Number(process.env.FPS_SECONDS || 10);
const USER = process.env.FPS_USER || 'dispatcher';
const WIDTH = Number(process.env.FPS_WIDTH || 1440);
const HEIGHT = Number(process.env.FPS_HEIGHT || 900);

function percentile(sorted, p) {
  if (!sorted.length) return 0;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.floor(p * (sorted.length - 1))))];
}

const round = (x) => Math.round(x * 10) / 10;

/** Pans and zooms with the mouse over `box` until `until` (ms since the epoch). */
async function drive(page, box, until) {
  const cx = box.x + box.width / 2;
  const cy = box.y + box.height / 2;
  const moves = [
    [-220, 0],
    [0, -160],
    [220, 0],
    [0, 160],
  ];
  let step = 0;
  while (Date.now() < until) {
    // A drag: about half a second of pointer moves, as a hand would make.
    const [dx, dy] = moves[step % moves.length];
    await page.mouse.move(cx, cy);
    await page.mouse.down();
    for (let i = 1; i <= 24 && Date.now() < until; i++) {
      await page.mouse.move(cx + (dx * i) / 24, cy + (dy * i) / 24);
      await sleep(16);
    }
    await page.mouse.up();
    // Then zoom in and out again around the centre with the wheel.
    const direction = step % 2 === 0 ? -1 : 1;
    for (let i = 0; i < 6 && Date.now() < until; i++) {
      await page.mouse.wheel(0, direction * 100);
      await sleep(60);
    }
    for (let i = 0; i < 6 && Date.now() < until; i++) {
      await page.mouse.wheel(0, -direction * 100);
      await sleep(60);
    }
    step += 1;
  }
}

async function main() {
  const logDir = process.env.FPS_LOGS || mkdtempSync(path.join(os.tmpdir(), 'cityward-fps-'));
  if (!process.env.FPS_LOGS) cleanups.unshift(() => rmSync(logDir, { recursive: true, force: true }));
  const { base } = await startTarget({
    size: SIZE,
    logDir,
    usage: 'Set CITYWARD_BIN (path of the cityward binary, run as a demo) or CITYWARD_URL (a running demo node). See the top of this file.',
  });
  const browser = await launchChromium();
  const context = await browser.newContext({ locale: 'en-US', viewport: { width: WIDTH, height: HEIGHT } });
  const page = await context.newPage();
  // FPS_FULL_RESOLUTION=1 keeps full resolution while the map moves, to compare.
  if (process.env.FPS_FULL_RESOLUTION) await page.addInitScript(() => localStorage.setItem('cityward.resolution', 'full'));
  page.on('pageerror', (error) => console.error(`[page error] ${error.message}`));
  await page.goto(base);
  await signIn(page, USER);
  await waitFor('the map to load the city layers', () => page.evaluate(() => window.__cityward?.map?.ready === true), 120_000, 500);
  // Positions first arrive within a second or two; a node without them still gets measured.
  await waitFor('the positions layer to start', () => page.evaluate(() => window.__cityward?.map?.positionsState !== 'idle'), 20_000, 250).catch(() => undefined);
  await sleep(3000);
  const box = await page.locator('.map .maplibregl-canvas').boundingBox();
  const before = await page.evaluate(() => window.__cityward.map.positionUpdates);

  await page.evaluate(() => {
    const times = [];
    window.__fpsFrames = times;
    window.__fpsRunning = true;
    const frame = (t) => {
      times.push(t);
      if (window.__fpsRunning) requestAnimationFrame(frame);
    };
    requestAnimationFrame(frame);
  });
  await drive(page, box, Date.now() + SECONDS * 1000);
  const times = await page.evaluate(() => {
    window.__fpsRunning = false;
    return window.__fpsFrames;
  });
  const hook = await page.evaluate(() => {
    const m = window.__cityward.map;
    return { devices: m.layers.devices ?? 0, vehicles: m.vehicles, positions: m.positions, updates: m.positionUpdates, state: m.positionsState, scale: m.resolution().lowest };
  });

  const intervals = [];
  for (let i = 1; i < times.length; i++) intervals.push(times[i] - times[i - 1]);
  const span = times.length > 1 ? times[times.length - 1] - times[0] : 0;
  const rates = intervals.map((ms) => 1000 / Math.max(ms, 0.001)).sort((a, b) => a - b);
  const result = {
    fps_mean: round(span > 0 ? (intervals.length * 1000) / span : 0),
    fps_p5: round(percentile(rates, 0.05)),
    frames: times.length,
    devices: hook.devices,
    vehicles: hook.vehicles,
    seconds: round(span / 1000),
    longest_frame_ms: round(intervals.length ? Math.max(...intervals) : 0),
    position_updates: hook.updates - before,
    // Below 1 when the map rendered at reduced resolution while moving (src/resolution.ts).
    lowest_render_scale: hook.scale,
    positions_state: hook.state,
    size: process.env.CITYWARD_URL ? null : SIZE,
    viewport: `${WIDTH}x${HEIGHT}`,
  };
  console.log(JSON.stringify(result));
  await context.close();
}

let code = 1;
try {
  await main();
  code = 0;
} catch (e) {
  console.error(`fps: ${e.message}`);
} finally {
  await cleanup();
}
process.exit(code);
