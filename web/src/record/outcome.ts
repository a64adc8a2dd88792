/**
 * What became of an uploaded session once the processor has seen it: accepted seconds, rejected
 * segments with their reasons, and the points the ledger credited (GET /v1/sessions/{id}/outcome).
 * The upload's own check only says the files arrived intact; this is the verdict that counts.
 */
import { ShapeError, shape } from './shape';

export interface SegmentOutcome {
  segment_id: string;
  index: number;
  accepted: boolean;
  reasons: string[];
  duration_s: number;
  points: number;
}

export interface SessionOutcome {
  session_id: string;
  /** "waiting" (not in the catalog yet), receiving, complete, validated, processing, processed, rejected, failed */
  state: string;
  final: boolean;
  accepted_s: number;
  rejected_s: number;
  points: number;
  segments: SegmentOutcome[];
  problems: { code: string; path: string; message: string }[];
}

/** Thrown when the gateway's answer does not have the outcome's shape. */
export class OutcomeShapeError extends ShapeError {}

const check = shape('outcome', (m) => new OutcomeShapeError(m));

/** The outcome in `data`, checked field by field; OutcomeShapeError names the first field at fault. */
export function parseOutcome(data: unknown): SessionOutcome {
  if (typeof data !== 'object' || data === null) throw new OutcomeShapeError('outcome: not an object');
  const d = data as Record<string, unknown>;
  const { num, str, bool, list } = check;
  const final = bool(d.final, 'final');
  const segments = list(d.segments, 'segments');
  const problems = Array.isArray(d.problems) ? d.problems : [];
  return {
    session_id: str(d.session_id, 'session_id'),
    state: str(d.state, 'state'),
    final,
    accepted_s: num(d.accepted_s, 'accepted_s'),
    rejected_s: num(d.rejected_s, 'rejected_s'),
    points: num(d.points, 'points'),
    segments: segments.map((s, i) => {
      const g = (s ?? {}) as Record<string, unknown>;
      const accepted = bool(g.accepted, `segments[${i}].accepted`);
      const reasons = list(g.reasons, `segments[${i}].reasons`);
      return {
        segment_id: str(g.segment_id, `segments[${i}].segment_id`), index: num(g.index, `segments[${i}].index`),
        accepted, reasons: reasons.map((r, j) => str(r, `segments[${i}].reasons[${j}]`)),
        duration_s: num(g.duration_s, `segments[${i}].duration_s`), points: num(g.points, `segments[${i}].points`),
      };
    }),
    problems: problems.map((p) => {
      const q = (p ?? {}) as Record<string, unknown>;
      return { code: String(q.code ?? ''), path: String(q.path ?? ''), message: String(q.message ?? '') };
    }),
  };
}

/** What a player reads for a segment's rejection reason (the code itself when it is not one of these). */
const REASON_TEXT: Record<string, string> = {
  duplicate_frames: 'repeats the pictures of an earlier drive',
  duplicate_log: 'repeats the inputs of an earlier drive',
  pose_not_from_inputs: 'the logged positions do not follow from the inputs',
  controls_not_from_inputs: 'the logged controls do not follow from the inputs',
  inputs_not_replayable: 'the inputs could not be replayed',
  video_motion_contradicts_log: 'the video moves differently from the log',
  too_short: 'shorter than 2 s',
  too_few_good_frames: 'too many unusable pictures',
  stationary: 'the car hardly moved',
  pose_teleport: 'the car jumped',
  controls_implausible: 'implausible controls',
};

export function reasonText(code: string): string {
  return REASON_TEXT[code] ?? code;
}

export interface OutcomeSource {
  sessionOutcome(sessionId: string): Promise<SessionOutcome>;
}

export interface PollOptions {
  /** First wait between asks; it grows by half each time up to maxIntervalMs. */
  intervalMs?: number;
  maxIntervalMs?: number;
  /** Gives up (resolves with the last outcome seen, not final) after this long. */
  limitMs?: number;
  sleep?: (ms: number) => Promise<void>;
  now?: () => number;
}

/**
 * Asks for the outcome until it is final, calling onUpdate with each answer; resolves with the last
 * one (final, or the latest seen when the limit ran out, or null if none came). `signal` stops it.
 * A failed ask is retried at the next interval; it never throws.
 */
export async function pollOutcome(source: OutcomeSource, sessionId: string, onUpdate: (o: SessionOutcome) => void,
                                  signal: AbortSignal, opts: PollOptions = {}): Promise<SessionOutcome | null> {
  const sleep = opts.sleep ?? ((ms: number) => new Promise<void>((r) => setTimeout(r, ms)));
  const now = opts.now ?? (() => Date.now());
  const limit = opts.limitMs ?? 5 * 60_000;
  const maxInterval = opts.maxIntervalMs ?? 10_000;
  let interval = opts.intervalMs ?? 2_000;
  const started = now();
  let last: SessionOutcome | null = null;
  while (!signal.aborted) {
    try {
      last = await source.sessionOutcome(sessionId);
      if (signal.aborted) break;
      onUpdate(last);
      if (last.final) return last;
    } catch {
      // the gateway or the ingest is briefly away: ask again at the next interval
    }
    if (now() - started + interval > limit) break;
    await sleep(interval);
    interval = Math.min(maxInterval, Math.round(interval * 1.5));
  }
  return last;
}
