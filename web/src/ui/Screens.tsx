import type { Game, HudSnapshot } from '../game/controller';
import { reasonText, type SessionOutcome } from '../record/outcome';

function mb(bytes: number): string {
  return `${(bytes / 1e6).toFixed(1)} MB`;
}

export function StartScreen({ game, hud }: { game: Game; hud: HudSnapshot }) {
  return (
    <div className="screen" data-testid="start-screen">
      <div className="card">
        <h1>Scale Diffusion</h1>
        <p className="tagline">Drive one minute through New York. What you see and do becomes training data for self-driving models.</p>
        <p className="city">City: <b>{hud.cityName}</b> · route of {Math.round(hud.routeLength_m)} m</p>
        {hud.cityAttribution && <p className="fineprint" data-testid="attribution">{hud.cityAttribution}</p>}
        <div className="buttons">
          <button className="primary" data-testid="start" onClick={() => void game.start(true)}>Start recording · 1 min</button>
          <button data-testid="practice" onClick={() => void game.start(false)}>Practice drive</button>
          <button onClick={() => game.setHelp(true)}>Controls</button>
          <button data-testid="open-contributions" onClick={() => game.setContributions(true)}>Contributions</button>
        </div>
        <label className="toggle">
          <input type="checkbox" data-testid="diffusion-toggle" checked={hud.diffusionOn}
            onChange={(e) => game.setDiffusionWanted(e.target.checked)} />
          Diffusion view (photoreal stream, when the server offers it)
        </label>
        <p className="fineprint">Follow the blue route; the banner tells you where to turn. Obey the lights and stop signs,
          stay on your side of the street, and mind the pedestrians. Enter starts.</p>
        {hud.cities.length > 0 && (
          <p className="fineprint">Cities: {hud.cities.map((c) => (
            <a key={c} href={`?city=${encodeURIComponent(c)}`}>{c} </a>))}</p>
        )}
        {hud.notice && <p className="warn">{hud.notice}</p>}
        {hud.playerId && <p className="fineprint">Player {hud.playerId}</p>}
      </div>
    </div>
  );
}

export function HelpPanel({ onClose }: { onClose: () => void }) {
  return (
    <div className="screen help" data-testid="help">
      <div className="card">
        <h2>Controls</h2>
        <table>
          <tbody>
            <tr><td>W / ↑</td><td>throttle</td></tr>
            <tr><td>S / ↓ / Space</td><td>brake; press again when stopped to reverse</td></tr>
            <tr><td>A D / ← →</td><td>steer</td></tr>
            <tr><td>Gamepad</td><td>left stick steers, right trigger throttle, left trigger brake, Start pauses</td></tr>
            <tr><td>Esc / P</td><td>pause</td></tr>
            <tr><td>C</td><td>chase camera (practice only: the recording shows the driver camera)</td></tr>
            <tr><td>H</td><td>this help</td></tr>
          </tbody>
        </table>
        <button onClick={onClose}>Close</button>
      </div>
    </div>
  );
}

export function UploadScreen({ hud }: { hud: HudSnapshot }) {
  const u = hud.upload;
  const pct = u && u.totalBytes ? (100 * u.sentBytes) / u.totalBytes : 0;
  return (
    <div className="screen" data-testid="upload-screen">
      <div className="card">
        <h2>Uploading your drive…</h2>
        <div className="progress big"><div className="progress-bar" style={{ width: `${pct.toFixed(1)}%` }} /></div>
        <p>{u ? `${u.file}: ${mb(u.sentBytes)} of ${mb(u.totalBytes)}` : 'Preparing the files…'}</p>
        {u?.retry && <p className="warn">Connection trouble ({u.retry.reason}); retrying, try {u.retry.attempt}…</p>}
      </div>
    </div>
  );
}

export function ResultScreen({ game, hud }: { game: Game; hud: HudSnapshot }) {
  const r = hud.result;
  if (!r) {
    return (
      <div className="screen" data-testid="result-screen">
        <div className="card"><h2>Done</h2><button onClick={() => game.backToMenu()}>Menu</button></div>
      </div>
    );
  }
  const verdict = r.uploadError ? 'upload-failed' : r.accepted ? 'accepted' : r.sessionId ? 'rejected' : 'local';
  return (
    <div className="screen" data-testid="result-screen">
      <div className="card">
        <h2 data-testid="verdict" data-verdict={verdict}>
          {verdict === 'accepted' && '✔ Upload received'}
          {verdict === 'rejected' && '✘ Upload rejected'}
          {verdict === 'upload-failed' && '✘ Upload failed'}
          {verdict === 'local' && 'Recording finished (not uploaded)'}
        </h2>
        <p className="score-line">Score <b>{r.score}</b> · route {Math.round(r.progress * 100)}% ·
          {' '}{r.infractions} infraction{r.infractions === 1 ? '' : 's'}</p>
        <p className="fineprint">{r.frames} frames · {r.durationS.toFixed(1)} s · {mb(r.videoBytes)} of video</p>
        {r.uploadError && <p className="warn">{r.uploadError}</p>}
        {r.problems.length > 0 && (
          <ul className="problems" data-testid="problems">
            {r.problems.map((p, i) => <li key={i}><code>{p.code}</code> {p.message}</li>)}
          </ul>
        )}
        {verdict === 'accepted' && <ProcessedOutcome outcome={r.outcome ?? null} gaveUp={r.outcomeGaveUp ?? false} />}
        {r.totals && (
          <p className="totals" data-testid="totals">Your contribution: {r.totals.sessions_uploaded} session
            {r.totals.sessions_uploaded === 1 ? '' : 's'} accepted, {Math.round(r.totals.seconds_uploaded)} s of driving
            ({r.totals.sessions_rejected} rejected).</p>
        )}
        {r.sessionId && <p className="fineprint">Session {r.sessionId}</p>}
        <div className="buttons">
          {(r.uploadError || verdict === 'rejected') && (
            <button data-testid="retry-upload" onClick={() => void game.uploadLast()}>
              {r.uploadError ? 'Retry upload' : 'Upload again'}
            </button>
          )}
          <button data-testid="result-contributions" onClick={() => game.setContributions(true)}>Contributions</button>
          <button className="primary" onClick={() => game.backToMenu()}>Drive again</button>
        </div>
      </div>
    </div>
  );
}

/**
 * The processed verdict of an accepted upload, as the processor and the ledger decided it. Addressable
 * for browser tests: `result-state` (data-state: the catalog state, "waiting" before the catalog has the
 * session), `result-accepted-s`, `result-points`, and one `result-rejected` row per rejected segment
 * (data-reasons: its reason codes, comma-separated).
 */
export function ProcessedOutcome({ outcome, gaveUp }: { outcome: SessionOutcome | null; gaveUp: boolean }) {
  const state = outcome?.state ?? 'waiting';
  if (!outcome || !outcome.final) {
    return (
      <div className="outcome" data-testid="result-outcome">
        <p data-testid="result-state" data-state={state}>
          {gaveUp
            ? 'Still processing: the points will appear in your contributions when it is done.'
            : `Processing your drive (${state})…`}
        </p>
      </div>
    );
  }
  const rejected = outcome.segments.filter((s) => !s.accepted);
  return (
    <div className="outcome" data-testid="result-outcome">
      <p data-testid="result-state" data-state={state}>
        {state === 'processed' ? 'Processed' : state === 'failed' ? 'Processing failed' : `Processed: ${state}`}:
        {' '}<b data-testid="result-accepted-s" data-value={outcome.accepted_s}>{outcome.accepted_s.toFixed(1)} s</b> accepted
        {outcome.rejected_s > 0 && <>, {outcome.rejected_s.toFixed(1)} s rejected</>}
      </p>
      <p className="points">
        <b data-testid="result-points" data-value={outcome.points}>{outcome.points.toFixed(3)}</b> points credited
      </p>
      {rejected.length > 0 && (
        <ul className="problems">
          {rejected.map((s) => (
            <li key={s.segment_id} data-testid="result-rejected" data-reasons={s.reasons.join(',')}>
              Segment {s.index + 1} ({s.duration_s.toFixed(1)} s): {s.reasons.map(reasonText).join('; ') || 'rejected'}
            </li>
          ))}
        </ul>
      )}
      {outcome.problems.length > 0 && (
        <ul className="problems">
          {outcome.problems.map((p, i) => <li key={i}><code>{p.code}</code> {p.message}</li>)}
        </ul>
      )}
    </div>
  );
}

export function ErrorScreen({ game, hud }: { game: Game; hud: HudSnapshot }) {
  return (
    <div className="screen" data-testid="error-screen">
      <div className="card">
        <h2>Something went wrong</h2>
        <p className="warn">{hud.error}</p>
        <button onClick={() => game.backToMenu()}>Back to the menu</button>
      </div>
    </div>
  );
}
