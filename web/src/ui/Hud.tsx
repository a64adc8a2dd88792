import { useEffect, useRef } from 'react';
import type { Game, HudSnapshot } from '../game/controller';

const ARROWS: Record<string, string> = { LEFT: '↰', RIGHT: '↱', STRAIGHT: '↑', LANEFOLLOW: '↑', VOID: '■' };
const LABELS: Record<string, string> = {
  LEFT: 'Turn left', RIGHT: 'Turn right', STRAIGHT: 'Go straight', LANEFOLLOW: 'Follow the road', VOID: 'No route',
};
const INFRACTION_TEXT: Record<string, string> = {
  collision_vehicle: 'Hit a car', collision_pedestrian: 'Hit a pedestrian', collision_static: 'Hit a building',
  red_light: 'Ran a red light', stop_sign: 'Rolled a stop sign', off_road: 'Off the road', wrong_way: 'Wrong way',
};

function clock(s: number): string {
  const t = Math.ceil(s);
  return `${Math.floor(t / 60)}:${String(t % 60).padStart(2, '0')}`;
}

function Minimap({ game }: { game: Game }) {
  const ref = useRef<HTMLCanvasElement>(null);
  useEffect(() => {
    let raf = 0;
    let last = 0;
    const draw = (t: number) => {
      raf = requestAnimationFrame(draw);
      if (t - last < 150) return;
      last = t;
      const ctx = ref.current?.getContext('2d');
      if (ctx) game.drawMinimap(ctx, 180);
    };
    raf = requestAnimationFrame(draw);
    return () => cancelAnimationFrame(raf);
  }, [game]);
  return <canvas ref={ref} className="minimap" width={180} height={180} data-testid="minimap" />;
}

export function Hud({ game, hud }: { game: Game; hud: HudSnapshot }) {
  const next = hud.nextTurn;
  const active = hud.commandName !== 'LANEFOLLOW' && hud.commandName !== 'VOID';
  const banner = hud.routeFinished ? 'Route complete — keep driving until the time is up'
    : active ? LABELS[hud.commandName]
    : next ? `${LABELS[next.name]} in ${Math.round(next.distance_m)} m` : 'Follow the road to the goal';
  const arrow = hud.routeFinished ? '★' : active ? ARROWS[hud.commandName] : next ? ARROWS[next.name] : '↑';
  return (
    <div className="hud" data-testid="hud">
      <div className="hud-top-left">
        {hud.recording ? (
          <div className="rec" data-testid="rec">
            <span className="rec-dot" /> REC <span className="rec-time">{clock(hud.recording.remaining_s)}</span>
            <span className="rec-frames">{hud.recording.frames} frames</span>
          </div>
        ) : hud.phase === 'practice' ? (
          <div className="rec practice">PRACTICE · Esc pauses</div>
        ) : null}
        {hud.diffusionMessage && <div className="diffusion-note" data-testid="diffusion-message">{hud.diffusionMessage}</div>}
      </div>
      <div className={`command ${active ? 'active' : ''}`} data-testid="command" data-command={hud.command}>
        <span className="command-arrow">{arrow}</span>
        <span className="command-text">{banner}</span>
      </div>
      <Minimap game={game} />
      <div className="hud-bottom-left">
        <div className="speed" data-testid="speed"><span>{Math.round(hud.speed_kmh)}</span><small>km/h</small></div>
        <div className="progress" title="route completion">
          <div className="progress-bar" style={{ width: `${(hud.progress * 100).toFixed(1)}%` }} />
          <span>{Math.round(hud.progress * 100)}% · {Math.round(hud.distanceRemaining_m)} m to go</span>
        </div>
      </div>
      <div className="hud-bottom-right">
        {hud.infractions.slice().reverse().map((i) => (
          <div key={`${i.kind}-${i.t_s}`} className="infraction">{INFRACTION_TEXT[i.kind] ?? i.kind}</div>
        ))}
        <div className="score" data-testid="score">{hud.score} pts</div>
        <div className="infraction-count">Infractions: {hud.infractionCount}</div>
        <div className="fps">{hud.fps} fps</div>
      </div>
      {hud.phase === 'countdown' && <div className="countdown" data-testid="countdown">{hud.countdown || 'GO'}</div>}
      {hud.phase === 'finishing' && <div className="center-note">Finishing the recording…</div>}
      {hud.paused && (
        <div className="pause" data-testid="paused">
          <h2>Paused</h2>
          <p>{hud.recording ? 'The recording holds while paused.' : ''} Esc or P to continue.</p>
          {hud.phase === 'practice' && <button onClick={() => game.backToMenu()}>Back to the menu</button>}
        </div>
      )}
      {hud.notice && <div className="notice">{hud.notice}</div>}
      {hud.cityAttribution && <div className="attribution" data-testid="hud-attribution">{hud.cityAttribution}</div>}
    </div>
  );
}
