#!/usr/bin/env node
// Drives one scripted session in the real game against a running stack, as a player would:
// start screen, countdown, a recorded drive (the scripted driver's inputs go through the game's
// input path), upload, result. Saves screenshots and result.json into --out.
//
//   node web/e2e/drive.mjs --url http://127.0.0.1:8080 --out /tmp/e2e [--seed 7] [--duration 32]
//        [--size 640x360] [--diffusion] [--corrupt events.jsonl]
//
// --corrupt FILE changes one byte of FILE on its way to the store (same size), so the gateway
// rejects the session and the result screen must say why.
//
// --diffusion turns the diffusion view on: the offer goes through the gateway to the stack's
// diffusion service, which streams its backend's frames back.
// --diffusion-provider mirage (with --diffusion) streams to the gateway's hosted provider instead.
import { mkdirSync, writeFileSync, appendFileSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { launch } from './browser.mjs';

function args(argv) {
  const out = { url: 'http://127.0.0.1:8080', out: join(tmpdir(), 'scale-diffusion-e2e'), seed: '7', duration: '32', size: '640x360', diffusion: false, timeout: '240' };
  for (let i = 2; i < argv.length; i++) {
    const k = argv[i].replace(/^--/, '');
    if (k === 'diffusion') out.diffusion = true;
    else out[k] = argv[++i];
  }
  return out;
}

const a = args(process.argv);
mkdirSync(a.out, { recursive: true });
const logPath = join(a.out, 'console.log');
writeFileSync(logPath, '');
const log = (line) => appendFileSync(logPath, `${new Date().toISOString()} ${line}\n`);
const deadline = Date.now() + Number(a.timeout) * 1000;
const left = () => Math.max(1000, deadline - Date.now());

const browser = await launch();
let exitCode = 1;
try {
  const page = await browser.newPage({ viewport: { width: 960, height: 540 } });
  page.on('console', (m) => log(`console.${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => log(`pageerror: ${e.message}`));
  if (a.corrupt) {
    await page.route((url) => url.pathname.startsWith('/v1/store/') && url.pathname.endsWith(`/${a.corrupt}`), async (route) => {
      const body = route.request().postDataBuffer();
      if (body && body.length) body[body.length - 2] = body[body.length - 2] === 0x30 ? 0x31 : 0x30;
      log(`corrupted one byte of ${a.corrupt} in transit`);
      await route.continue({ postData: body });
    }, { times: 1 });
  }
  const query = new URLSearchParams({ autopilot: '1', seed: a.seed, duration_s: a.duration, size: a.size });
  if (a.diffusion) query.set('diffusion', a['diffusion-provider'] ?? '1');
  const started = Date.now();
  await page.goto(`${a.url}/?${query}`, { timeout: left() });
  await page.getByTestId('start').waitFor({ state: 'visible', timeout: left() });
  await page.screenshot({ path: join(a.out, 'start.png') });
  const attribution = page.getByTestId('attribution');
  const startScreen = { city: await page.evaluate(() => window.__sdGame.snapshot().cityName),
    attribution: (await attribution.count()) ? await attribution.innerText() : null };
  log(`start screen shown: ${JSON.stringify(startScreen)}`);
  await page.getByTestId('start').click();
  await page.waitForFunction(() => window.__sdGame?.currentPhase === 'driving', null, { timeout: left() });
  log('recording');
  const halfway = Math.min(12, Number(a.duration) / 2);
  await page.waitForFunction((s) => (window.__sdGame?.snapshot().recording?.elapsed_s ?? 0) >= s, halfway, { timeout: left(), polling: 500 });
  await page.screenshot({ path: join(a.out, 'driving.png') });
  const driving = await page.evaluate(() => window.__sdGame.snapshot());
  const hudAttribution = page.getByTestId('hud-attribution');
  const drivingAttribution = (await hudAttribution.count()) ? await hudAttribution.innerText() : null;
  log(`driving snapshot: ${JSON.stringify(driving)}`);
  await page.waitForFunction(() => ['result', 'error'].includes(window.__sdGame?.currentPhase), null, { timeout: left(), polling: 500 });
  await page.waitForTimeout(300);
  await page.screenshot({ path: join(a.out, 'result.png') });
  const problemList = page.getByTestId('problems');
  const problems = (await problemList.count()) ? await problemList.innerText() : '';
  const snap = await page.evaluate(() => window.__sdGame.snapshot());
  const verdict = await page.getByTestId('verdict').getAttribute('data-verdict').catch(() => null);
  let afterRetry = null;
  if (a.corrupt && verdict === 'rejected') {
    // The gateway keeps a rejected session's files: uploading them again, intact, is accepted.
    await page.getByTestId('retry-upload').click();
    await page.waitForFunction(() => window.__sdGame?.currentPhase === 'uploading', null, { timeout: left() }).catch(() => {});
    await page.waitForFunction(() => window.__sdGame?.currentPhase === 'result', null, { timeout: left(), polling: 250 });
    afterRetry = await page.getByTestId('verdict').getAttribute('data-verdict');
    await page.screenshot({ path: join(a.out, 'result-after-retry.png') });
  }
  const result = { phase: snap.phase, verdict, afterRetry, problemsShown: problems, result: snap.result, error: snap.error, diffusionMessage: driving.diffusionMessage,
    diffusionMessageAtEnd: snap.diffusionMessage,
    startScreen,
    hudWhileDriving: { command: driving.command, speed_kmh: driving.speed_kmh, fps: driving.fps, recording: driving.recording, attribution: drivingAttribution },
    wall_s: (Date.now() - started) / 1000 };
  writeFileSync(join(a.out, 'result.json'), JSON.stringify(result, null, 1));
  log(`result: ${JSON.stringify(result)}`);
  exitCode = snap.phase === 'result' ? 0 : 1;
} catch (e) {
  log(`failed: ${e.stack ?? e}`);
  console.error(e);
} finally {
  await browser.close();
}
process.exit(exitCode);
