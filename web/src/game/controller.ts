/**
 * The game: start screen, countdown, a one-minute recorded drive, upload and result. Owns the
 * fixed-timestep simulation loop, the view, the recorder and the gateway client, and publishes a
 * snapshot of what the HUD shows. The simulation and the log formats live in sim/ and record/.
 */
import { defaultCellPx } from '../record/barcode';
import { Recording } from '../record/recording';
import { assembleSession } from '../record/session';
import { pollOutcome, type SessionOutcome } from '../record/outcome';
import { GatewayClient, GatewayError, type PlayerTotals, type Problem, type UploadProgress } from '../record/upload';
import { Autopilot } from '../sim/autopilot';
import { cameraPose } from '../sim/camera';
import type { InputEvent } from '../sim/input';
import { COMMAND_NAMES, RoadOption, nextJunction } from '../sim/planner';
import { driveScore } from '../sim/score';
import { SIM_DT_S, World } from '../sim/world';
import { CanvasRecorder, bitrateFor } from '../media/recorder';
import { DIFFUSION_PROMPT, DiffusionLink } from '../media/diffusion';
import { HostedLink, type DiffusionStream } from '../media/hosted';
import { GameView, type ViewMode } from '../render/view';
import type { GameConfig } from './config';
import { listCities, loadCity, type LoadedCity } from './cityLoader';
import { DomInput, type CommandKey } from './domInput';

export type Phase = 'loading' | 'menu' | 'countdown' | 'driving' | 'practice' | 'finishing' | 'uploading' | 'result' | 'error';

export interface HudSnapshot {
  phase: Phase;
  paused: boolean;
  help: boolean;
  /** The contributions page is open (over the start or the result screen). */
  contributions: boolean;
  viewMode: ViewMode;
  countdown: number;
  speed_kmh: number;
  command: number;
  commandName: string;
  nextTurn: { command: number; name: string; distance_m: number } | null;
  progress: number;
  distanceRemaining_m: number;
  routeLength_m: number;
  routeFinished: boolean;
  recording: { elapsed_s: number; remaining_s: number; frames: number } | null;
  infractions: { kind: string; t_s: number }[];
  infractionCount: number;
  score: number;
  notice: string | null;
  diffusionOn: boolean;
  diffusionMessage: string | null;
  upload: UploadProgress | null;
  result: SessionResult | null;
  error: string | null;
  fps: number;
  cityName: string;
  /** The city's data credit (city.source.attribution): shown wherever the city is shown. */
  cityAttribution: string;
  playerId: string | null;
  gamepad: boolean;
  cities: string[];
}

export interface SessionResult {
  sessionId: string | null;
  accepted: boolean;
  problems: Problem[];
  totals: PlayerTotals | null;
  frames: number;
  durationS: number;
  videoBytes: number;
  uploadError: string | null;
  infractions: number;
  progress: number;
  score: number;
  /** What processing made of the upload (null until the first answer); polled after an accepted upload. */
  outcome?: SessionOutcome | null;
  /** True once polling stopped without a final outcome (it is still processing; Contributions will show it). */
  outcomeGaveUp?: boolean;
}

export interface BenchResult {
  fps: number;
  frames: number;
  seconds: number;
  width: number;
  height: number;
  record: boolean;
}

const COUNTDOWN_S = 3;
// Up to 10 steps (167 ms) per frame: below 6 fps the simulation falls behind the page clock.
const MAX_STEPS_PER_FRAME = 10;
const BUILD = `web-${__APP_VERSION__}+${__BUILD_TIME__}`;

declare const __APP_VERSION__: string;
declare const __BUILD_TIME__: string;

export class Game {
  private listeners = new Set<(s: HudSnapshot) => void>();
  private loaded: LoadedCity | null = null;
  world!: World;
  private view!: GameView;
  private input!: DomInput;
  readonly client: GatewayClient;
  private phase: Phase = 'loading';
  private raf = 0;
  private paused = false;
  private help = false;
  private contributionsOpen = false;
  private viewMode: ViewMode = 'driver';
  private countdownEnd = 0;
  private notice: { text: string; until: number } | null = null;
  private diffusionMessage: string | null = null;
  /** The live diffusion stream of this session, if any. */
  private diffusion: DiffusionStream | null = null;
  /** A diffusion stream being connected (fed with frames before it is live). */
  private diffusionLink: DiffusionStream | null = null;
  /** The stream this session showed until it was lost, and the first frame shown plain after it. */
  private diffusionLost: { link: DiffusionStream; plainFromFrameId: number } | null = null;
  diffusionWanted: boolean;
  private upload: UploadProgress | null = null;
  private result: SessionResult | null = null;
  private outcomePoll: AbortController | null = null;
  private error: string | null = null;
  private autopilot: Autopilot | null = null;
  /** Drives started so far (each gets its own route and traffic seed). */
  private drives = 0;
  // Recording state.
  private recorder: CanvasRecorder | null = null;
  private rec: Recording | null = null;
  private t0 = 0;
  private createdAt = new Date();
  private sessionId: string | null = null;
  private pausedMs = 0;
  private pauseStarted = 0;
  private lastRenderAt = 0;
  private stepsSinceRender = 0;
  private framesRendered = 0;
  private fpsWindow: number[] = [];
  private lastHudAt = 0;
  private lastFiles: Awaited<ReturnType<typeof assembleSession>> | null = null;
  private cellPx: number;
  bench: BenchResult | null = null;
  /** City files offered next to the game (/cities/index.json). */
  private cities: string[] = [];
  private benchStart = 0;
  private onVisibility = () => {
    if (document.hidden && (this.phase === 'driving' || this.phase === 'practice') && !this.paused) this.togglePause();
  };

  constructor(readonly cfg: GameConfig, private readonly canvas: HTMLCanvasElement) {
    this.client = new GatewayClient({ baseUrl: cfg.gatewayUrl, storage: window.localStorage, clientBuild: BUILD });
    this.diffusionWanted = cfg.diffusion;
    this.cellPx = defaultCellPx(cfg.height);
  }

  subscribe(fn: (s: HudSnapshot) => void): () => void {
    this.listeners.add(fn);
    fn(this.snapshot());
    return () => this.listeners.delete(fn);
  }

  private publish(): void {
    const s = this.snapshot();
    for (const fn of this.listeners) fn(s);
  }

  get currentPhase(): Phase {
    return this.phase;
  }

  private setPhase(p: Phase): void {
    this.phase = p;
    this.publish();
  }

  private showNotice(text: string, ms = 3000): void {
    this.notice = { text, until: performance.now() + ms };
  }

  /** Loads the city, builds the world and the view, and shows the start screen. */
  async init(): Promise<void> {
    try {
      this.loaded = await loadCity(this.cfg.cityUrl, this.cfg.citySeed);
      this.newWorld();
      this.view = new GameView(this.canvas, this.cfg.width, this.cfg.height, this.loaded.city, this.world, this.cfg.mount);
      this.input = new DomInput((ev) => this.handleInput(ev), (c) => this.command(c));
      document.addEventListener('visibilitychange', this.onVisibility);
      this.renderStill('chase');
      this.setPhase('menu');
      if (this.cfg.record && this.cfg.upload) {
        this.client.ensurePlayer().then(() => this.publish()).catch((e) => {
          this.showNotice(`The server is not reachable (${e instanceof Error ? e.message : e}); recordings cannot be uploaded.`, 8000);
          this.publish();
        });
      }
      void listCities().then((names) => {
        this.cities = names;
        this.publish();
      });
      if (this.cfg.autostart) void this.start(true);
    } catch (e) {
      this.error = e instanceof Error ? e.message : String(e);
      this.setPhase('error');
    }
  }

  /** A fresh world for the next drive: the first uses the configured seed, later ones the next seeds. */
  private newWorld(): void {
    const seed = this.cfg.seed + this.drives;
    this.world = new World(this.loaded!.city, { seed, cars: this.cfg.cars, pedestrians: this.cfg.pedestrians });
    this.autopilot = this.cfg.autopilot ? new Autopilot(this.world, (ev) => this.handleInput(ev)) : null;
    this.view?.setWorld(this.loaded!.city, this.world);
  }

  private pageMs(): number {
    return performance.now() - this.t0;
  }

  /** Every raw input, from the keyboard, a gamepad or the scripted driver, comes through here. */
  private handleInput(ev: Omit<InputEvent, 't_ms'>): void {
    if (this.phase !== 'driving' && this.phase !== 'practice') return;
    if (this.paused) return;
    const full: InputEvent = { ...ev, t_ms: this.recorder ? Math.max(0, this.pageMs()) : 0 };
    this.world.input(full);
    if (this.rec && this.recorder) this.rec.event(full);
  }

  private command(c: CommandKey): void {
    if (this.contributionsOpen) {
      if (c === 'pause') this.contributionsOpen = false; // Esc closes the page; nothing else acts under it
    } else if (c === 'start' && this.phase === 'menu') void this.start(true);
    else if (c === 'pause' && (this.phase === 'driving' || this.phase === 'practice')) this.togglePause();
    else if (c === 'pause' && this.phase === 'menu' && this.help) this.help = false;
    else if (c === 'help') this.help = !this.help;
    else if (c === 'camera') {
      if (this.phase === 'driving') this.showNotice('The recording shows the driver camera; the chase camera is for practice.');
      else this.viewMode = this.viewMode === 'driver' ? 'chase' : 'driver';
    }
    this.publish();
  }

  togglePause(): void {
    if (this.phase !== 'driving' && this.phase !== 'practice') return;
    this.paused = !this.paused;
    if (this.paused) this.pauseStarted = performance.now();
    else this.pausedMs += performance.now() - this.pauseStarted;
    this.publish();
  }

  setHelp(on: boolean): void {
    this.help = on;
    this.publish();
  }

  /** Opens or closes the contributions page (from the start or the result screen). */
  setContributions(open: boolean): void {
    this.contributionsOpen = open && (this.phase === 'menu' || this.phase === 'result');
    this.publish();
  }

  setDiffusionWanted(on: boolean): void {
    this.diffusionWanted = on;
    this.publish();
  }

  /** Starts a drive: recorded (the default) or practice (no recording, chase camera). */
  async start(recorded: boolean): Promise<void> {
    if (this.phase !== 'menu' && this.phase !== 'result') return;
    this.contributionsOpen = false;
    this.result = null;
    this.upload = null;
    this.error = null;
    this.diffusionMessage = null;
    this.diffusion = null;
    this.diffusionLink = null;
    this.diffusionLost = null;
    this.newWorld();
    this.drives++;
    this.viewMode = recorded ? 'driver' : 'chase';
    this.help = false;
    if (!recorded || !this.cfg.record) {
      this.beginLoop(false);
      return;
    }
    this.countdownEnd = performance.now() + COUNTDOWN_S * 1000;
    this.setPhase('countdown');
    this.sessionId = null;
    if (this.cfg.upload) {
      try {
        await this.client.ensurePlayer();
        const s = await this.client.createSession(this.loaded!.city.name, this.world.route.id);
        this.sessionId = s.session_id;
      } catch (e) {
        this.error = `The session could not be created: ${e instanceof Error ? e.message : e}`;
        this.setPhase('error');
        return;
      }
    }
    // The diffusion stream connects during the countdown, fed with the countdown's frames; the
    // recording starts once it is live or has failed, and keeps that choice for the whole session.
    let connecting: Promise<void> | null = null;
    if (this.diffusionWanted && this.sessionId) {
      connecting = this.connectDiffusion(this.sessionId).finally(() => { connecting = null; });
    }
    const countdownTick = () => {
      if (this.phase !== 'countdown') return;
      this.renderStill(this.viewMode);
      if (this.diffusionLink) this.diffusionLink.send(this.canvas);
      if (performance.now() >= this.countdownEnd && !connecting) this.beginLoop(true);
      else {
        this.publish();
        this.raf = requestAnimationFrame(countdownTick);
      }
    };
    this.raf = requestAnimationFrame(countdownTick);
  }

  private async connectDiffusion(sessionId: string): Promise<void> {
    // `?diffusion=mirage`: the hosted provider, reached directly with a token from the gateway (media/hosted.ts).
    const link: DiffusionStream = this.cfg.diffusionProvider === 'mirage'
      ? new HostedLink(this.cfg.width, this.cfg.height,
        { defaultLatencyMs: this.cfg.diffusionLatencyMs, defaultErrorMs: this.cfg.diffusionLatencyErrorMs })
      : new DiffusionLink(this.cfg.width, this.cfg.height);
    this.diffusionLink = link;
    try {
      await link.connect(this.client, sessionId, DIFFUSION_PROMPT);
      this.diffusion = link;
      this.diffusionMessage = `Diffusion view on (${link.backend}).`;
    } catch (e) {
      link.close();
      this.diffusion = null;
      this.diffusionLink = null;
      const reason = e instanceof GatewayError ? e.message : e instanceof Error ? e.message : String(e);
      this.diffusionMessage = `Diffusion view unavailable: ${reason}. Showing and recording the plain render.`;
    }
    this.publish();
  }

  private renderStill(mode: ViewMode): void {
    const p = this.world.player;
    this.view.render(this.world, mode, cameraPose(p.x, p.y, p.yaw, this.cfg.mount), true);
  }

  private beginLoop(recorded: boolean): void {
    this.paused = false;
    this.pausedMs = 0;
    this.framesRendered = 0;
    this.stepsSinceRender = 1;
    this.rec = null;
    this.recorder = null;
    if (recorded) {
      // Frame 0 is drawn, barcode included, before the recorder starts: Chromium's canvas track
      // hands the canvas's current picture to a recorder once when it starts, so that picture must
      // already be frame 0 (it is not requested again).
      this.rec = new Recording(this.world, this.cfg.mount);
      this.createdAt = new Date();
      this.t0 = performance.now();
      this.renderFrame(this.t0, false);
      try {
        this.recorder = new CanvasRecorder(this.canvas, bitrateFor(this.cfg.width, this.cfg.height));
      } catch (e) {
        this.error = e instanceof Error ? e.message : String(e);
        this.setPhase('error');
        return;
      }
      this.t0 = this.recorder.start();
      // Its times: rendered and handed over at the recorder's start (page clock 0).
      this.rec.retime(0, 0);
      this.rec.probe('frame_present', 0, 0, 0);
      // Keys and gamepad positions already held when the recording starts, so that the event log
      // alone replays the controls from the first frame.
      for (const code of this.world.mapper.heldKeys()) this.rec.event({ t_ms: 0, device: 'keyboard', kind: 'keydown', code, value: 1 });
      for (const g of this.world.mapper.gamepadState()) this.rec.event({ t_ms: 0, device: 'gamepad', kind: g.kind, code: g.code, value: g.value });
    } else {
      this.t0 = performance.now();
    }
    this.benchStart = performance.now();
    this.lastRenderAt = 0;
    this.setPhase(recorded ? 'driving' : 'practice');
    this.raf = requestAnimationFrame((t) => this.frame(t));
  }

  private activeMs(now: number): number {
    return now - this.t0 - this.pausedMs;
  }

  private frame(_rafTime: number): void {
    if (this.phase !== 'driving' && this.phase !== 'practice') return;
    this.raf = requestAnimationFrame((t) => this.frame(t));
    const now = performance.now();
    this.input.pollGamepad();
    if (this.paused) {
      if (now - this.lastHudAt > 250) this.publishHud(now);
      return;
    }
    // Fixed-timestep simulation, catching up with the page clock; when the page is too slow the
    // simulation falls behind (the skipped wall time is treated like a pause).
    const target = this.activeMs(now);
    let steps = 0;
    while (this.world.sim_t_ms + SIM_DT_S * 1000 <= target) {
      if (steps === MAX_STEPS_PER_FRAME) {
        this.pausedMs += target - this.world.sim_t_ms;
        break;
      }
      this.autopilot?.update(SIM_DT_S);
      this.world.step();
      steps++;
      this.stepsSinceRender++;
      this.rec?.afterStep();
    }
    const interval = this.cfg.bench ? 0 : 1000 / this.cfg.fpsTarget - 4;
    if (this.stepsSinceRender > 0 && now - this.lastRenderAt >= interval) this.renderFrame(now);
    const done = this.cfg.bench ? now - this.benchStart >= this.cfg.durationS * 1000 : target >= this.cfg.durationS * 1000;
    if (this.phase === 'driving' && done) void this.finish();
    else if (this.phase === 'practice' && this.cfg.bench && done) void this.finish();
    if (now - this.lastHudAt > 100) this.publishHud(now);
  }

  private renderFrame(now: number, handOff = true): void {
    const w = this.world;
    const p = w.player;
    const tRender = performance.now();
    this.view.render(w, this.viewMode, cameraPose(p.x, p.y, p.yaw, this.cfg.mount));
    let diffusionFrameId: number | null = null;
    const lost = this.rec ? this.diffusion?.lostReason(tRender) : null;
    if (lost) this.fallBackToPlain(lost);
    if (this.rec && this.diffusion?.live) {
      // The render goes out with its own id, which the service draws on the picture it makes of it.
      this.view.drawBarcode(this.rec.nextFrameId, this.cellPx);
      this.diffusion.send(this.canvas, this.rec.nextFrameId);
      this.view.drawVideo(this.diffusion.video);
      diffusionFrameId = this.diffusion.shownFrameId();
    }
    if (this.rec) {
      this.view.drawBarcode(this.rec.nextFrameId, this.cellPx);
      if (handOff) this.recorder?.frame();
      const tCapture = performance.now();
      this.rec.frameRendered(tRender - this.t0, tCapture - this.t0, diffusionFrameId, handOff);
    }
    this.framesRendered++;
    this.stepsSinceRender = 0;
    this.lastRenderAt = now;
    this.fpsWindow.push(now);
    while (this.fpsWindow.length && now - this.fpsWindow[0] > 1000) this.fpsWindow.shift();
  }

  /**
   * The stream died mid-drive: the rest of the drive shows and records the plain render (frames with no
   * `diffusion_frame_id`), and the manifest names the first such frame (`diffusion.plain_from_frame_id`).
   */
  private fallBackToPlain(reason: string): void {
    const link = this.diffusion!;
    link.close();
    const plainFromFrameId = this.rec!.nextFrameId;
    this.diffusionLost = { link, plainFromFrameId };
    this.diffusion = null;
    this.diffusionLink = null;
    this.diffusionMessage = `Diffusion view lost (${reason}). Showing and recording the plain render from frame ${plainFromFrameId}.`;
    this.showNotice('Diffusion view lost: showing the plain render.', 4000);
    console.warn(`diffusion stream lost at frame ${plainFromFrameId}: ${reason}`);
  }

  private publishHud(now: number): void {
    this.lastHudAt = now;
    if (this.notice && now > this.notice.until) this.notice = null;
    this.publish();
  }

  /** Ends the drive: stops the recorder, assembles the session and uploads it. */
  private async finish(): Promise<void> {
    cancelAnimationFrame(this.raf);
    const elapsed = (performance.now() - this.benchStart) / 1000;
    if (this.cfg.bench) {
      this.bench = { fps: this.framesRendered / elapsed, frames: this.framesRendered, seconds: elapsed,
        width: this.cfg.width, height: this.cfg.height, record: this.recorder !== null };
    }
    if (this.phase === 'practice' || !this.recorder || !this.rec) {
      this.setPhase(this.cfg.bench ? 'result' : 'menu');
      return;
    }
    this.setPhase('finishing');
    const log = this.rec.finish();
    this.diffusion?.close();
    const video = await this.recorder.stop();
    const durationS = (this.recorder.tStop - this.t0) / 1000;
    const w = this.world;
    const base: SessionResult = {
      sessionId: this.sessionId, accepted: false, problems: [], totals: null, frames: log.frameCount,
      durationS, videoBytes: video.size, uploadError: null, infractions: w.history.length, progress: w.tracker.progress,
      score: this.score(),
    };
    if (!this.cfg.upload || !this.sessionId) {
      this.result = base;
      this.setPhase('result');
      return;
    }
    const shown = this.diffusion ?? this.diffusionLost?.link ?? null;
    this.lastFiles = await assembleSession(log, video, {
      sessionId: this.sessionId,
      playerId: this.client.playerId ?? 'unknown',
      createdAt: this.createdAt,
      clientBuild: BUILD,
      userAgent: navigator.userAgent,
      city: { name: this.loaded!.city.name, seed: this.loaded!.seed, source: this.loaded!.source },
      route: { routeId: w.route.id, start: w.route.start, goal: w.route.goal, length_m: w.route.length },
      width: this.cfg.width,
      height: this.cfg.height,
      fpsTarget: this.cfg.fpsTarget,
      fovDeg: this.cfg.mount.fov_deg,
      mount: this.cfg.mount,
      cellPx: this.cellPx,
      diffusion: shown
        ? { enabled: true, backend: shown.backend, prompt: DIFFUSION_PROMPT, model: shown.model ?? 'unknown',
            plain_from_frame_id: this.diffusionLost?.plainFromFrameId ?? null, ...shown.pairingSummary?.() }
        : { enabled: false, backend: null, prompt: null, model: null },
      durationS,
    });
    this.diffusion = null;
    this.diffusionLink = null;
    this.diffusionLost = null;
    this.result = base;
    await this.uploadLast();
  }

  /** Uploads (or re-uploads) the last recorded session and shows the verdict. */
  async uploadLast(): Promise<void> {
    if (!this.lastFiles || !this.sessionId || !this.result) return;
    this.setPhase('uploading');
    const r = this.result;
    try {
      const done = await this.client.uploadSession(this.sessionId, this.lastFiles.files, this.lastFiles.manifestBlob, (p) => {
        this.upload = p;
        this.publish();
      });
      r.accepted = done.accepted;
      r.problems = done.problems;
      r.uploadError = null;
    } catch (e) {
      r.uploadError = e instanceof Error ? e.message : String(e);
      if (e instanceof GatewayError) r.problems = e.problems;
    }
    try {
      r.totals = await this.client.me();
    } catch {
      r.totals = null;
    }
    this.setPhase('result');
    if (r.accepted && r.sessionId) void this.followOutcome(r);
  }

  /** Polls the processed outcome of an accepted upload until it is final; stops when the screen closes. */
  private async followOutcome(r: SessionResult): Promise<void> {
    this.outcomePoll?.abort();
    const poll = new AbortController();
    this.outcomePoll = poll;
    r.outcome = null;
    r.outcomeGaveUp = false;
    const last = await pollOutcome(this.client, r.sessionId!, (o) => {
      r.outcome = o;
      this.publish();
    }, poll.signal);
    if (!poll.signal.aborted && !(last?.final)) {
      r.outcomeGaveUp = true;
      this.publish();
    }
  }

  backToMenu(): void {
    this.outcomePoll?.abort();
    cancelAnimationFrame(this.raf);
    if (!this.loaded || !this.view) {
      window.location.reload(); // nothing loaded yet: start over
      return;
    }
    this.recorder = null;
    this.rec = null;
    this.paused = false;
    this.newWorld();
    this.viewMode = 'driver';
    this.renderStill('chase');
    this.setPhase('menu');
  }

  /** Draws the minimap: streets, the route, the goal, other cars and the player. */
  drawMinimap(ctx: CanvasRenderingContext2D, size: number): void {
    const w = this.world;
    if (!w) return;
    const p = w.player;
    const scale = size / 420; // metres across the map
    ctx.save();
    ctx.clearRect(0, 0, size, size);
    ctx.fillStyle = 'rgba(18,22,28,0.82)';
    ctx.fillRect(0, 0, size, size);
    ctx.translate(size / 2, size / 2);
    ctx.rotate(p.yaw - Math.PI / 2);
    ctx.scale(scale, -scale);
    ctx.translate(-p.x, -p.y);
    ctx.lineCap = 'round';
    ctx.strokeStyle = '#59606a';
    w.net.edges.forEach((e, k) => {
      ctx.lineWidth = e.width_m;
      ctx.beginPath();
      w.net.edgeLines[k].points.forEach(([x, y], i) => (i ? ctx.lineTo(x, y) : ctx.moveTo(x, y)));
      ctx.stroke();
    });
    const path = w.route.path.points;
    ctx.strokeStyle = '#36c2ff';
    ctx.lineWidth = 5 / scale;
    ctx.beginPath();
    path.forEach(([x, y], i) => (i ? ctx.lineTo(x, y) : ctx.moveTo(x, y)));
    ctx.stroke();
    ctx.fillStyle = '#ffd24a';
    ctx.beginPath();
    ctx.arc(w.route.goal[0], w.route.goal[1], 7 / scale, 0, Math.PI * 2);
    ctx.fill();
    ctx.fillStyle = '#c8ccd2';
    for (const c of w.traffic.cars) ctx.fillRect(c.x - 2, c.y - 2, 4, 4);
    ctx.restore();
    // The player: always at the centre, pointing up.
    ctx.fillStyle = '#ff5a3c';
    ctx.beginPath();
    ctx.moveTo(size / 2, size / 2 - 9);
    ctx.lineTo(size / 2 + 6, size / 2 + 7);
    ctx.lineTo(size / 2 - 6, size / 2 + 7);
    ctx.closePath();
    ctx.fill();
  }

  private score(): number {
    const w = this.world;
    return w ? driveScore(w.tracker.sMax, w.history.map((h) => h.infraction), w.tracker.finished) : 0;
  }

  snapshot(): HudSnapshot {
    const w = this.world;
    const recording = this.recorder && this.phase === 'driving'
      ? { elapsed_s: Math.max(0, this.activeMs(this.paused ? this.pauseStarted : performance.now()) / 1000),
        remaining_s: Math.max(0, this.cfg.durationS - this.activeMs(this.paused ? this.pauseStarted : performance.now()) / 1000),
        frames: this.rec?.log.frameCount ?? 0 }
      : null;
    const next = w ? nextJunction(w.route, w.tracker.sCurrent) : null;
    const command = w ? w.tracker.command : RoadOption.VOID;
    return {
      phase: this.phase,
      paused: this.paused,
      help: this.help,
      contributions: this.contributionsOpen && (this.phase === 'menu' || this.phase === 'result'),
      viewMode: this.viewMode,
      countdown: Math.max(0, Math.ceil((this.countdownEnd - performance.now()) / 1000)),
      speed_kmh: w ? w.speed_mps * 3.6 : 0,
      command,
      commandName: COMMAND_NAMES[command] ?? '',
      nextTurn: next && !w.tracker.finished ? { command: next.junction.command, name: COMMAND_NAMES[next.junction.command], distance_m: next.distance_m } : null,
      progress: w ? w.tracker.progress : 0,
      distanceRemaining_m: w ? w.tracker.distanceRemaining : 0,
      routeLength_m: w ? w.route.length : 0,
      routeFinished: w ? w.tracker.finished : false,
      recording,
      infractions: w ? w.history.slice(-4).map((h) => ({ kind: h.infraction.kind, t_s: h.t_s })) : [],
      infractionCount: w ? w.history.length : 0,
      score: this.score(),
      notice: this.notice?.text ?? null,
      diffusionOn: this.diffusionWanted,
      diffusionMessage: this.diffusionMessage,
      upload: this.upload,
      result: this.result,
      error: this.error,
      fps: this.fpsWindow.length,
      cityName: this.loaded?.city.name ?? '',
      cityAttribution: this.loaded?.city.source.attribution ?? '',
      playerId: this.client.playerId,
      gamepad: this.input?.gamepadConnected ?? false,
      cities: this.cities,
    };
  }

  dispose(): void {
    cancelAnimationFrame(this.raf);
    this.input?.dispose();
    document.removeEventListener('visibilitychange', this.onVisibility);
    this.view?.dispose();
  }
}
