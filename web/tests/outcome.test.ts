import { describe, expect, it } from 'vitest';
import { OutcomeShapeError, parseOutcome, pollOutcome, reasonText, type SessionOutcome } from '../src/record/outcome';

const outcome = (state: string, final: boolean, extra: Partial<SessionOutcome> = {}): SessionOutcome => ({
  session_id: 's-1', state, final, accepted_s: 0, rejected_s: 0, points: 0, segments: [], problems: [], ...extra,
});

describe('parseOutcome', () => {
  it('accepts the gateway shape and keeps every field', () => {
    const o = parseOutcome({
      session_id: 's-1', state: 'processed', final: true, accepted_s: 10, rejected_s: 5, points: 12.5,
      segments: [{ segment_id: 'route_s-1_000', index: 0, accepted: false, reasons: ['duplicate_log'], duration_s: 5, points: 0 }],
      problems: [{ code: 'duplicate_log', path: 'events.jsonl', message: 'repeats sess-0' }],
    });
    expect(o.points).toBe(12.5);
    expect(o.segments[0].reasons).toEqual(['duplicate_log']);
    expect(o.problems[0].message).toBe('repeats sess-0');
  });

  it('names the field at fault in a malformed answer', () => {
    expect(() => parseOutcome(null)).toThrow(OutcomeShapeError);
    expect(() => parseOutcome({ ...outcome('processed', true), points: '3' })).toThrow(/points is not a number/);
    expect(() => parseOutcome({ ...outcome('processed', true), final: 'yes' })).toThrow(/final is not a boolean/);
    expect(() => parseOutcome({ ...outcome('processed', true), segments: [{ segment_id: 'x', index: 0, accepted: true, reasons: 'none', duration_s: 1, points: 0 }] }))
      .toThrow(/segments\[0\]\.reasons is not a list/);
  });

  it('says known reasons in words and shows unknown codes as they are', () => {
    expect(reasonText('duplicate_frames')).toMatch(/earlier drive/);
    expect(reasonText('some_new_rule')).toBe('some_new_rule');
  });
});

describe('pollOutcome', () => {
  function clock() {
    let t = 0;
    const waits: number[] = [];
    return { now: () => t, sleep: async (ms: number) => { waits.push(ms); t += ms; }, waits };
  }

  it('asks until the outcome is final, reporting each answer, and backs off', async () => {
    const answers = [outcome('waiting', false), outcome('processing', false), outcome('processing', false),
      outcome('processed', true, { points: 4.2 })];
    const seen: string[] = [];
    const c = clock();
    const got = await pollOutcome({ sessionOutcome: async () => answers.shift()! }, 's-1', (o) => seen.push(o.state),
      new AbortController().signal, { intervalMs: 2000, maxIntervalMs: 4000, sleep: c.sleep, now: c.now });
    expect(seen).toEqual(['waiting', 'processing', 'processing', 'processed']);
    expect(got?.final).toBe(true);
    expect(got?.points).toBe(4.2);
    expect(c.waits).toEqual([2000, 3000, 4000]);
  });

  it('keeps asking through a failed ask', async () => {
    let n = 0;
    const c = clock();
    const got = await pollOutcome({
      sessionOutcome: async () => { n += 1; if (n === 1) throw new Error('503'); return outcome('processed', true); },
    }, 's-1', () => {}, new AbortController().signal, { sleep: c.sleep, now: c.now });
    expect(n).toBe(2);
    expect(got?.state).toBe('processed');
  });

  it('gives up after the limit with the last answer, not final', async () => {
    const c = clock();
    let asks = 0;
    const got = await pollOutcome({ sessionOutcome: async () => { asks += 1; return outcome('processing', false); } },
      's-1', () => {}, new AbortController().signal, { intervalMs: 1000, maxIntervalMs: 1000, limitMs: 5000, sleep: c.sleep, now: c.now });
    expect(got?.final).toBe(false);
    expect(asks).toBe(6); // at 0, 1, …, 5 s: the last at the limit itself
    expect(c.now()).toBeLessThanOrEqual(5000);
  });

  it('stops when the screen closes', async () => {
    const stop = new AbortController();
    let asks = 0;
    const c = clock();
    const got = await pollOutcome({
      sessionOutcome: async () => { asks += 1; if (asks === 2) stop.abort(); return outcome('processing', false); },
    }, 's-1', () => {}, stop.signal, { sleep: c.sleep, now: c.now });
    expect(asks).toBe(2);
    expect(got?.final).toBe(false);
  });
});
