#!/usr/bin/env node
// Drives one scripted session in the real game against a running stack, as a player would:
// start screen, countdown, a recorded drive (the scripted driver's inputs go through the game's
// input path), upload, result. Saves screenshots and result.json into --out.
//
//   node web/e2e/drive.mjs --url http://127.0.0.1:8080 --out /tmp/e2e [--seed 7] [--duration 32]
//        [--size 640x360] [--diffusion] [--corrupt events.jsonl] [--wait-outcome] [--contributions]
//        [--link-wallet]
//
// --corrupt FILE changes one byte of FILE on its way to the store (same size), so the gateway
// rejects the session and the result screen must say why.
//
// --diffusion turns the diffusion view on: the offer goes through the gateway to the stack's
// diffusion service, which streams its backend's frames back.
// --diffusion-provider mirage (with --diffusion) streams to the gateway's hosted provider instead.
//
// --wait-outcome waits, after an accepted upload, until the result screen shows the processed
// outcome (result-state final) and records accepted seconds, points and rejected segments.
// --contributions then opens the contributions page from the result screen and records its credits,
// balances and leaderboard; --link-wallet (with --contributions) also links a wallet there, through
// a test wallet standing in for the browser extension (e2e/wallet.mjs).
import { mkdirSync, writeFileSync, appendFileSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { launch } from './browser.mjs';
import { installTestWallet } from './wallet.mjs';

const FLAGS = new Set(['diffusion', 'wait-outcome', 'contributions', 'link-wallet']);

function args(argv) {
  const out = { url: 'http://127.0.0.1:8080', out: join(tmpdir(), 'scale-diffusion-e2e'), seed: '7', duration: '32', size: '640x360', diffusion: false, timeout: '240' };
  for (let i = 2; i < argv.length; i++) {
    const k = argv[i].replace(/^--/, '');
    if (FLAGS.has(k)) out[k] = true;
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
  const context = await browser.newContext({ viewport: { width: 960, height: 540 } });
  const testWallet = a['link-wallet'] ? await installTestWallet(context) : null;
  const page = await context.newPage();
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
  if (a.contributions) startScreen.contributions = await contributionsFromStart(page, testWallet);
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
  const outcome = a['wait-outcome'] && verdict === 'accepted' ? await waitOutcome(page) : null;
  const contributions = a.contributions && outcome ? await openContributions(page, snap.result.sessionId, testWallet) : null;
  const result = { phase: snap.phase, verdict, afterRetry, outcome, contributions, playerId: snap.playerId, problemsShown: problems, result: snap.result, error: snap.error, diffusionMessage: driving.diffusionMessage,
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

/** Waits for the result screen's processed outcome; what it shows, and a screenshot. */
async function waitOutcome(page) {
  const started = Date.now();
  const state = page.getByTestId('result-state');
  await page.waitForFunction(() => window.__sdGame?.snapshot().result?.outcome?.final === true, null, { timeout: left(), polling: 500 });
  await page.getByTestId('result-points').waitFor({ state: 'visible', timeout: left() });
  await page.screenshot({ path: join(a.out, 'result-processed.png') });
  const shown = {
    state: await state.getAttribute('data-state'),
    stateText: await state.innerText(),
    accepted_s: Number(await page.getByTestId('result-accepted-s').getAttribute('data-value')),
    points: Number(await page.getByTestId('result-points').getAttribute('data-value')),
    pointsText: await page.getByTestId('result-points').innerText(),
    rejected: await page.getByTestId('result-rejected').evaluateAll((els) => els.map((e) => ({ reasons: e.dataset.reasons, text: e.textContent }))),
    waited_s: (Date.now() - started) / 1000,
  };
  log(`processed outcome shown: ${JSON.stringify(shown)}`);
  return shown;
}

/**
 * Opens the contributions page from the start screen (a new player: nothing credited yet), tries
 * Link wallet with the wallet hidden from the page, and closes the page with Esc.
 */
async function contributionsFromStart(page, testWallet) {
  await page.getByTestId('open-contributions').click();
  await page.getByTestId('contributions-page').waitFor({ state: 'visible', timeout: left() });
  await page.waitForFunction(() => document.querySelector('[data-testid=contrib-credit], [data-testid=contrib-none], [data-testid=contributions-error]')
    && document.querySelector('[data-testid=wallet-link], [data-testid=wallet-address], [data-testid=wallet-load-error]'), null, { timeout: left(), polling: 250 });
  const shown = { none: (await page.getByTestId('contrib-none').count()) === 1, credits: await page.getByTestId('contrib-credit').count() };
  if (testWallet) {
    await page.evaluate(() => { window.__sdHiddenWallet = window.solana; delete window.solana; });
    await page.getByTestId('wallet-link').click();
    const err = page.getByTestId('wallet-error');
    await err.waitFor({ state: 'visible', timeout: left() });
    shown.noWallet = { kind: await err.getAttribute('data-kind'), text: await err.innerText() };
    await page.evaluate(() => { window.solana = window.__sdHiddenWallet; });
  }
  await page.keyboard.press('Escape');
  await page.getByTestId('start-screen').waitFor({ state: 'visible', timeout: left() });
  shown.closedWithEscape = (await page.getByTestId('contributions-page').count()) === 0;
  log(`contributions from the start screen: ${JSON.stringify(shown)}`);
  return shown;
}

/** Opens the contributions page from the result screen; its credits for `sid`, balances, leaderboard, and a linked wallet. */
async function openContributions(page, sid, testWallet) {
  await page.getByTestId('result-contributions').click();
  await page.getByTestId('contributions-page').waitFor({ state: 'visible', timeout: left() });
  await page.waitForFunction(() => document.querySelector('[data-testid=contrib-credit], [data-testid=contrib-none], [data-testid=contributions-error]')
    && document.querySelector('[data-testid=leaderboard-your-rank], [data-testid=leaderboard-error]'), null, { timeout: left(), polling: 250 });
  const read = async () => ({
    credits: await page.getByTestId('contrib-credit').evaluateAll((els) => els.map((e) => ({ session_id: e.dataset.session,
      segment_id: e.dataset.segment, points: Number(e.dataset.points), status: e.dataset.status,
      why: e.querySelector('[data-testid=contrib-why]')?.textContent ?? '' }))),
    pending: Number(await page.getByTestId('contrib-pending').getAttribute('data-value')),
    leaderboard: await page.getByTestId('leaderboard-row').evaluateAll((els) => els.map((e) => ({ rank: Number(e.dataset.rank),
      you: e.dataset.you === 'true', points: Number(e.dataset.points) }))),
    yourRank: await page.getByTestId('leaderboard-your-rank').getAttribute('data-value'),
    error: (await page.getByTestId('contributions-error').count()) ? await page.getByTestId('contributions-error').innerText() : null,
  });
  const shown = await read();
  shown.sessionCredits = shown.credits.filter((c) => c.session_id === sid);
  await page.screenshot({ path: join(a.out, 'contributions.png'), fullPage: true });
  if (testWallet) {
    await page.getByTestId('wallet-link').click();
    await page.waitForFunction(() => document.querySelector('[data-testid=wallet-address], [data-testid=wallet-error]'), null, { timeout: left(), polling: 250 });
    const err = page.getByTestId('wallet-error');
    shown.wallet = {
      expected: testWallet.address,
      shown: (await page.getByTestId('wallet-address').count()) ? await page.getByTestId('wallet-address').getAttribute('data-address') : null,
      error: (await err.count()) ? await err.innerText() : null,
      signed: testWallet.signed,
    };
    await page.screenshot({ path: join(a.out, 'contributions-wallet.png'), fullPage: true });
    log(`wallet: ${JSON.stringify(shown.wallet)}`);
  }
  log(`contributions shown: ${JSON.stringify(shown)}`);
  return shown;
}
