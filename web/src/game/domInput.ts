/**
 * Browser input: keyboard listeners and a gamepad poller that turn the player's actions into raw
 * input events (the events.jsonl records) for one sink. The scripted driver feeds the same sink.
 */
import { DRIVING_KEYS, type InputEvent } from '../sim/input';

export type InputSink = (ev: Omit<InputEvent, 't_ms'>) => void;
export type CommandKey = 'pause' | 'camera' | 'help' | 'start' | 'sound';

const COMMAND_KEYS: Record<string, CommandKey> = {
  Escape: 'pause', KeyP: 'pause', KeyC: 'camera', KeyH: 'help', Enter: 'start', KeyM: 'sound',
};
const AXIS_STEP = 0.01;

export class DomInput {
  private readonly onKey: (e: KeyboardEvent) => void;
  private readonly lastPad = new Map<string, number>();
  private padIndex: number | null = null;
  private readonly onPadConnect: (e: GamepadEvent) => void;

  constructor(private readonly sink: InputSink, private readonly onCommand: (c: CommandKey) => void,
    private readonly target: Window = window) {
    this.onKey = (e: KeyboardEvent) => {
      if (e.target instanceof HTMLInputElement || e.target instanceof HTMLTextAreaElement) return;
      if (DRIVING_KEYS.has(e.code)) {
        e.preventDefault();
        if (e.repeat) return;
        this.sink({ device: 'keyboard', kind: e.type === 'keydown' ? 'keydown' : 'keyup', code: e.code, value: e.type === 'keydown' ? 1 : 0 });
      } else if (e.type === 'keydown' && !e.repeat && COMMAND_KEYS[e.code]) {
        e.preventDefault();
        this.onCommand(COMMAND_KEYS[e.code]);
      }
    };
    this.onPadConnect = (e: GamepadEvent) => {
      if (this.padIndex === null) this.padIndex = e.gamepad.index;
    };
    target.addEventListener('keydown', this.onKey);
    target.addEventListener('keyup', this.onKey);
    target.addEventListener('gamepadconnected', this.onPadConnect);
  }

  /** Reads the gamepad (browsers only offer polling) and emits an event for each change. */
  pollGamepad(): void {
    if (this.padIndex === null || typeof navigator.getGamepads !== 'function') return;
    const pad = navigator.getGamepads()[this.padIndex];
    if (!pad) return;
    pad.axes.forEach((value, i) => this.emitIfChanged('axis', `axis${i}`, value, AXIS_STEP));
    pad.buttons.forEach((b, i) => {
      this.emitIfChanged('button', `button${i}`, b.value, AXIS_STEP);
      if (b.pressed && !this.lastPad.has(`pressed${i}`)) {
        this.lastPad.set(`pressed${i}`, 1);
        if (i === 9) this.onCommand('pause'); // Start
        if (i === 3) this.onCommand('camera'); // Y
      } else if (!b.pressed) this.lastPad.delete(`pressed${i}`);
    });
  }

  private emitIfChanged(kind: 'axis' | 'button', code: string, raw: number, step: number): void {
    const value = Math.max(-1, Math.min(1, Math.round(raw / step) * step));
    const last = this.lastPad.get(code);
    if (last !== undefined && Math.abs(last - value) < step / 2) return;
    if (last === undefined && value === 0) {
      this.lastPad.set(code, 0);
      return;
    }
    this.lastPad.set(code, value);
    this.sink({ device: 'gamepad', kind, code, value: Math.round(value * 1000) / 1000 });
  }

  get gamepadConnected(): boolean {
    return this.padIndex !== null;
  }

  dispose(): void {
    this.target.removeEventListener('keydown', this.onKey);
    this.target.removeEventListener('keyup', this.onKey);
    this.target.removeEventListener('gamepadconnected', this.onPadConnect);
  }
}
