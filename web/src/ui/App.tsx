import { useEffect, useRef, useState } from 'react';
import { Game, type HudSnapshot } from '../game/controller';
import { startAgentMode } from '../game/agentMode';
import { parseConfig } from '../game/config';
import { ContributionsPage } from './Contributions';
import { Hud } from './Hud';
import { ErrorScreen, HelpPanel, ResultScreen, StartScreen, UploadScreen } from './Screens';

declare global {
  interface Window {
    /** Test hook: the running game (phase, results, bench numbers). */
    __sdGame?: Game;
  }
}

export function App() {
  const canvasRef = useRef<HTMLCanvasElement>(null);
  const [game, setGame] = useState<Game | null>(null);
  const [hud, setHud] = useState<HudSnapshot | null>(null);

  useEffect(() => {
    const cfg = parseConfig(window.location.search);
    if (cfg.agent) {
      void startAgentMode(cfg, canvasRef.current!);
      return;
    }
    const g = new Game(cfg, canvasRef.current!);
    window.__sdGame = g;
    setGame(g);
    const unsubscribe = g.subscribe(setHud);
    void g.init();
    return () => {
      unsubscribe();
      g.dispose();
    };
  }, []);

  const phase = hud?.phase ?? 'loading';
  const driving = phase === 'driving' || phase === 'practice' || phase === 'countdown' || phase === 'finishing';
  return (
    <div className="app" data-phase={phase}>
      <canvas ref={canvasRef} className="view" data-testid="view" />
      {phase === 'loading' && <div className="screen"><div className="card"><h1>Loading the city…</h1></div></div>}
      {game && hud && driving && <Hud game={game} hud={hud} />}
      {game && hud?.contributions && <ContributionsPage game={game} onClose={() => game.setContributions(false)}
        refreshKey={hud.result?.outcome?.final ? hud.result.sessionId : null} />}
      {game && hud && !hud.contributions && phase === 'menu' && <StartScreen game={game} hud={hud} />}
      {game && hud && phase === 'uploading' && <UploadScreen hud={hud} />}
      {game && hud && !hud.contributions && phase === 'result' && <ResultScreen game={game} hud={hud} />}
      {game && hud && phase === 'error' && <ErrorScreen game={game} hud={hud} />}
      {game && hud?.help && <HelpPanel onClose={() => game.setHelp(false)} />}
    </div>
  );
}
