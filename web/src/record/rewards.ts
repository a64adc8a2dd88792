/**
 * The player's rewards as the gateway shows them (docs/api.md "Wallets and rewards"): the ledger's
 * credits with the rule and factors that priced them, the balances, the weekly leaderboard and the
 * linked wallet. Each parser checks the answer field by field and names the first field at fault.
 */
import { type Fields, shape } from './shape';

/** One credit of the ledger: a segment priced by `rule` from `factors` (docs/rewards.md). */
export interface Credit {
  entry_id: string;
  session_id: string;
  segment_id: string;
  /** Credited, after the daily cap. */
  points: number;
  /** What the rule priced before the cap. */
  gross_points: number;
  rule: string;
  factors: Record<string, number>;
  created_at: string;
  /** pending, in_epoch, paid or reversed */
  status: string;
  epoch_id: string;
  note: string;
}

export interface Contributions {
  pending_points: number;
  in_epoch_points: number;
  paid_points: number;
  today_points: number;
  daily_cap_points: number;
  accepted_s: number;
  /** Empty when no wallet is linked. */
  wallet_address: string;
  /** Newest first. */
  credits: Credit[];
  next_page_token: string;
}

export interface LeaderboardRow {
  rank: number;
  player_label: string;
  points: number;
  accepted_s: number;
  you: boolean;
}

export interface Leaderboard {
  /** ISO week, e.g. 2026-W49. */
  week: string;
  rows: LeaderboardRow[];
  /** null when the player has no points that week. */
  your_rank: number | null;
}

export interface Wallet {
  address: string;
  linked_at: string;
  chain_id: string;
}

export interface WalletState {
  wallet: Wallet | null;
  /** Every link and unlink, oldest first. */
  events: { action: string; address: string; at: string }[];
}

export interface WalletChallenge {
  /** The exact Sign-In With Solana text to sign, byte for byte. */
  message: string;
  nonce: string;
  expires_at: string;
}

const CREDIT_STATUSES = new Set(['pending', 'in_epoch', 'paid', 'reversed']);

function parseCredit(v: unknown, where: string): Credit {
  const { obj, num, str, fail } = shape('contributions');
  const c = obj(v, where);
  const f = obj(c.factors, `${where}.factors`);
  const factors: Record<string, number> = {};
  for (const [k, x] of Object.entries(f)) factors[k] = num(x, `${where}.factors.${k}`);
  const status = str(c.status, `${where}.status`);
  if (!CREDIT_STATUSES.has(status)) fail(`${where}.status`, 'pending, in_epoch, paid or reversed');
  return {
    entry_id: str(c.entry_id, `${where}.entry_id`), session_id: str(c.session_id, `${where}.session_id`),
    segment_id: str(c.segment_id, `${where}.segment_id`), points: num(c.points, `${where}.points`),
    gross_points: num(c.gross_points, `${where}.gross_points`), rule: str(c.rule, `${where}.rule`), factors,
    created_at: str(c.created_at, `${where}.created_at`), status, epoch_id: str(c.epoch_id, `${where}.epoch_id`),
    note: str(c.note, `${where}.note`),
  };
}

/** GET /v1/players/me/contributions, checked. */
export function parseContributions(data: unknown): Contributions {
  const { obj, num, str, list } = shape('contributions');
  const d = obj(data);
  return {
    pending_points: num(d.pending_points, 'pending_points'), in_epoch_points: num(d.in_epoch_points, 'in_epoch_points'),
    paid_points: num(d.paid_points, 'paid_points'), today_points: num(d.today_points, 'today_points'),
    daily_cap_points: num(d.daily_cap_points, 'daily_cap_points'), accepted_s: num(d.accepted_s, 'accepted_s'),
    wallet_address: str(d.wallet_address, 'wallet_address'),
    credits: list(d.credits, 'credits').map((c, i) => parseCredit(c, `credits[${i}]`)),
    next_page_token: str(d.next_page_token, 'next_page_token'),
  };
}

/** GET /v1/leaderboard, checked. */
export function parseLeaderboard(data: unknown): Leaderboard {
  const { obj, num, str, bool, list, fail } = shape('leaderboard');
  const d = obj(data);
  if (d.your_rank !== null && d.your_rank !== undefined) num(d.your_rank, 'your_rank');
  else if (d.your_rank === undefined) fail('your_rank', 'a number or null');
  return {
    week: str(d.week, 'week'),
    rows: list(d.rows, 'rows').map((v, i) => {
      const r = obj(v, `rows[${i}]`);
      return { rank: num(r.rank, `rows[${i}].rank`), player_label: str(r.player_label, `rows[${i}].player_label`),
        points: num(r.points, `rows[${i}].points`), accepted_s: num(r.accepted_s, `rows[${i}].accepted_s`),
        you: bool(r.you, `rows[${i}].you`) };
    }),
    your_rank: (d.your_rank as number | null) ?? null,
  };
}

function parseWalletFields(w: Fields, where: string, what: string): Wallet {
  const { str } = shape(what);
  return { address: str(w.address, `${where}address`), linked_at: str(w.linked_at, `${where}linked_at`),
    chain_id: str(w.chain_id, `${where}chain_id`) };
}

/** POST /v1/wallet/link's answer, checked. */
export function parseWallet(data: unknown): Wallet {
  return parseWalletFields(shape('wallet').obj(data), '', 'wallet');
}

/** GET /v1/wallet, checked. */
export function parseWalletState(data: unknown): WalletState {
  const { obj, str, list, fail } = shape('wallet');
  const d = obj(data);
  if (d.wallet === undefined) fail('wallet', 'an object or null');
  return {
    wallet: d.wallet === null ? null : parseWalletFields(obj(d.wallet, 'wallet'), 'wallet.', 'wallet'),
    events: list(d.events, 'events').map((v, i) => {
      const e = obj(v, `events[${i}]`);
      return { action: str(e.action, `events[${i}].action`), address: str(e.address, `events[${i}].address`),
        at: str(e.at, `events[${i}].at`) };
    }),
  };
}

/** POST /v1/wallet/challenge's answer, checked. */
export function parseWalletChallenge(data: unknown): WalletChallenge {
  const { obj, str } = shape('wallet challenge');
  const d = obj(data);
  return { message: str(d.message, 'message'), nonce: str(d.nonce, 'nonce'), expires_at: str(d.expires_at, 'expires_at') };
}

export interface EpochTotal {
  /** The payout epoch, or "" for credits not yet in one. */
  epoch_id: string;
  /** pending (no epoch yet), in_epoch (closed, not yet paid) or paid. */
  status: string;
  points: number;
  credits: number;
}

/**
 * The credits summed per payout epoch, pending first, then epochs newest first (their order in the
 * list, which is newest first). Reversed credits count nowhere: their points went back.
 */
export function epochTotals(credits: Credit[]): EpochTotal[] {
  const by = new Map<string, EpochTotal>();
  for (const c of credits) {
    if (c.status === 'reversed') continue;
    const key = c.status === 'pending' ? '' : c.epoch_id;
    const t = by.get(key) ?? { epoch_id: key, status: c.status === 'pending' ? 'pending' : c.status, points: 0, credits: 0 };
    // An epoch is paid when any of its credits reads paid (the operator marks the whole epoch).
    if (c.status === 'paid') t.status = 'paid';
    t.points = Math.round((t.points + c.points) * 1000) / 1000;
    t.credits += 1;
    by.set(key, t);
  }
  const all = [...by.values()];
  return [...all.filter((t) => t.epoch_id === ''), ...all.filter((t) => t.epoch_id !== '')];
}

/** `x` to at most `digits` decimals, without trailing zeros. */
const fmt = (x: number, digits = 2) => String(Number(x.toFixed(digits)));

/**
 * Why a credit is worth what it is, in the rule's own terms (docs/rewards.md "Pricing"): for
 * `segment-v1`, seconds × quality (diffusion × clean × progress) × scarcity × points per second.
 * Another rule's factors are listed as they are.
 */
export function creditWhy(c: Credit): string[] {
  const f = c.factors;
  const lines: string[] = [];
  if (c.rule === 'segment-v1' && ['seconds', 'quality', 'scarcity', 'millipoints_per_s'].every((k) => k in f)) {
    lines.push(`${fmt(f.seconds, 1)} s × quality ${fmt(f.quality, 3)} × scarcity ${fmt(f.scarcity, 3)} × ` +
      `${fmt(f.millipoints_per_s / 1000, 3)} points/s = ${fmt(c.gross_points, 3)} points`);
    const q: string[] = [];
    if ('diffusion' in f) q.push(`diffusion ${fmt(f.diffusion, 3)}${f.diffusion_share > 0 ? ` (${Math.round(f.diffusion_share * 100)}% of frames diffused)` : ''}`);
    if ('clean' in f) q.push(`clean ${fmt(f.clean, 3)}${f.infraction_penalty ? ` (infractions −${fmt(f.infraction_penalty, 2)})` : ''}`);
    if ('progress' in f) q.push(`progress ${fmt(f.progress, 3)}`);
    if (q.length) lines.push(`quality = ${q.join(' × ')}`);
    const classes = Object.keys(f).filter((k) => k.endsWith('_s') && k !== 'seconds' && f[k] > 0)
      .map((k) => k.slice(0, -2)).filter((c2) => `scarcity_${c2}` in f);
    if (classes.length) {
      lines.push(`scarcity: ${classes.map((k) => `${k.replace('_', ' ')} ${fmt(f[`${k}_s`], 1)} s at ×${fmt(f[`scarcity_${k}`], 2)}`).join(', ')}`);
    }
  } else {
    lines.push(`${c.rule}: ${Object.entries(f).map(([k, v]) => `${k} ${fmt(v, 3)}`).join(', ') || 'no factors'}`);
  }
  if (c.points !== c.gross_points) lines.push(`credited ${fmt(c.points, 3)} of ${fmt(c.gross_points, 3)}${c.note ? `: ${c.note}` : ''}`);
  else if (c.note) lines.push(c.note);
  return lines;
}

/** The ISO week of `d` (UTC), spelt as the leaderboard takes it: `2026-W49`. */
export function isoWeek(d: Date): string {
  const t = new Date(Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate()));
  t.setUTCDate(t.getUTCDate() + 4 - (t.getUTCDay() || 7)); // the Thursday of its week names the year
  const year = t.getUTCFullYear();
  const week = Math.ceil(((t.getTime() - Date.UTC(year, 0, 1)) / 86_400_000 + 1) / 7);
  return `${year}-W${String(week).padStart(2, '0')}`;
}

/** The ISO week `by` weeks after `week` (before, when negative). */
export function shiftWeek(week: string, by: number): string {
  const m = /^(\d{4})-W(\d{2})$/.exec(week);
  if (!m) throw new Error(`not an ISO week: ${week}`);
  const jan4 = Date.UTC(Number(m[1]), 0, 4); // always in week 1
  const monday1 = jan4 - (((new Date(jan4).getUTCDay() || 7) - 1) * 86_400_000);
  return isoWeek(new Date(monday1 + ((Number(m[2]) - 1 + by) * 7 + 3) * 86_400_000));
}
