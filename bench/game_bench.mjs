#!/usr/bin/env node
// Rendered frames per second of the game in headless Chromium, with recording off and on, at
// 640x360 and 1280x720, in one run. The game renders as fast as the browser lets it (bench mode:
// no 30 fps cap, the scripted driver drives the same route each time) for --seconds per case.
//
//   npm --prefix web run build && node bench/game_bench.mjs [--seconds 12] [--rounds 1] [--json out.json]
//
// It serves web/dist itself on 127.0.0.1 (no stack needed; nothing is uploaded).
import { createServer } from 'node:http';
import { readFile, writeFile } from 'node:fs/promises';
import { extname, join, normalize } from 'node:path';
import { fileURLToPath } from 'node:url';
import { launch } from '../web/e2e/browser.mjs';

const root = fileURLToPath(new URL('../web/dist/', import.meta.url));
const opts = { seconds: 12, rounds: 1, json: null, seed: 7 };
for (let i = 2; i < process.argv.length; i++) {
  const k = process.argv[i].replace(/^--/, '');
  opts[k] = k === 'json' ? process.argv[++i] : Number(process.argv[++i]);
}

const TYPES = { '.html': 'text/html', '.js': 'text/javascript', '.css': 'text/css', '.json': 'application/json', '.map': 'application/json' };
const server = createServer(async (req, res) => {
  const path = normalize(decodeURIComponent(new URL(req.url, 'http://x').pathname)).replace(/^\/+/, '');
  const file = join(root, path || 'index.html');
  if (!file.startsWith(root)) return res.writeHead(403).end();
  try {
    const body = await readFile(file);
    res.writeHead(200, { 'Content-Type': TYPES[extname(file)] ?? 'application/octet-stream' }).end(body);
  } catch {
    res.writeHead(404).end();
  }
});
await new Promise((r) => server.listen(0, '127.0.0.1', r));
const base = `http://127.0.0.1:${server.address().port}`;

const sizes = [[640, 360], [1280, 720]];
const results = [];
const browser = await launch();
try {
  for (let round = 0; round < opts.rounds; round++) {
    for (const [w, h] of sizes) {
      for (const record of [0, 1]) {
        const page = await browser.newPage({ viewport: { width: w, height: h } });
        const q = new URLSearchParams({ bench: '1', size: `${w}x${h}`, record: String(record), upload: '0',
          duration_s: String(opts.seconds), seed: String(opts.seed) });
        await page.goto(`${base}/?${q}`);
        await page.waitForFunction(() => window.__sdGame?.bench, null, { timeout: (opts.seconds + 60) * 1000, polling: 250 });
        const b = await page.evaluate(() => window.__sdGame.bench);
        results.push({ ...b, round });
        process.stderr.write(`${w}x${h} recording ${record ? 'on ' : 'off'}: ${b.fps.toFixed(1)} fps (${b.frames} frames in ${b.seconds.toFixed(1)} s)\n`);
        await page.close();
      }
    }
  }
} finally {
  await browser.close();
  server.close();
}

const mean = (xs) => xs.reduce((a, b) => a + b, 0) / xs.length;
const lines = ['| size | fps, recording off | fps, recording on | on / off |', '| --- | --- | --- | --- |'];
for (const [w, h] of sizes) {
  const off = mean(results.filter((r) => r.width === w && !r.record).map((r) => r.fps));
  const on = mean(results.filter((r) => r.width === w && r.record).map((r) => r.fps));
  lines.push(`| ${w}x${h} | ${off.toFixed(1)} | ${on.toFixed(1)} | ${(on / off).toFixed(2)} |`);
}
console.log(lines.join('\n'));
if (opts.json) await writeFile(opts.json, JSON.stringify({ seconds: opts.seconds, rounds: opts.rounds, results }, null, 1));
