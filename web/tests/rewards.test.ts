import { describe, expect, it } from 'vitest';
import {
  creditWhy, epochTotals, isoWeek, parseContributions, shiftWeek, parseLeaderboard, parseWallet, parseWalletChallenge, parseWalletState, type Credit,
} from '../src/record/rewards';
import { ShapeError } from '../src/record/shape';
import { GatewayClient } from '../src/record/upload';

const factors = {
  seconds: 10, quality: 1.1875, scarcity: 1.2, diffusion: 1, diffusion_share: 0, clean: 0.95, infraction_penalty: 0.05,
  progress: 1.25, progress_gained: 0.08, millipoints_per_s: 1000, follow_s: 8, scarcity_follow: 1, turn_s: 2, scarcity_turn: 2,
  straight_s: 0, scarcity_straight: 1.5,
};
const credit = (extra: Partial<Credit> = {}): Credit => ({
  entry_id: 'e-1', session_id: 's-1', segment_id: 'route_s-1_000', points: 14.25, gross_points: 14.25, rule: 'segment-v1',
  factors, created_at: '2026-12-02T10:00:00Z', status: 'pending', epoch_id: '', note: '', ...extra,
});
const contributions = (extra: Record<string, unknown> = {}) => ({
  pending_points: 14.25, in_epoch_points: 0, paid_points: 3, today_points: 14.25, daily_cap_points: 3600, accepted_s: 10,
  wallet_address: '', credits: [credit()], next_page_token: '', ...extra,
});

describe('parseContributions', () => {
  it('keeps every field of the gateway shape, factors included', () => {
    const c = parseContributions(contributions());
    expect(c.pending_points).toBe(14.25);
    expect(c.credits[0].factors.scarcity_turn).toBe(2);
    expect(c.credits[0].status).toBe('pending');
  });

  it('names the field at fault', () => {
    expect(() => parseContributions(null)).toThrow(ShapeError);
    expect(() => parseContributions([])).toThrow(/contributions: the answer is not an object/);
    expect(() => parseContributions(contributions({ paid_points: '3' }))).toThrow(/contributions: paid_points is not a number/);
    expect(() => parseContributions(contributions({ credits: {} }))).toThrow(/credits is not a list/);
    expect(() => parseContributions(contributions({ credits: [credit({ factors: { seconds: 'ten' } as never })] })))
      .toThrow(/credits\[0\]\.factors\.seconds is not a number/);
    expect(() => parseContributions(contributions({ credits: [credit({ status: 'settled' })] })))
      .toThrow(/credits\[0\]\.status is not pending, in_epoch, paid or reversed/);
    expect(() => parseContributions(contributions({ wallet_address: null }))).toThrow(/wallet_address is not a string/);
  });
});

describe('parseLeaderboard and the wallet answers', () => {
  it('reads a week with the player ranked and one without', () => {
    const row = { rank: 1, player_label: 'a1b2c3', points: 12.5, accepted_s: 30, you: true };
    expect(parseLeaderboard({ week: '2026-W49', rows: [row], your_rank: 1 })).toEqual({ week: '2026-W49', rows: [row], your_rank: 1 });
    expect(parseLeaderboard({ week: '2026-W49', rows: [], your_rank: null }).your_rank).toBeNull();
    expect(() => parseLeaderboard({ week: '2026-W49', rows: [] })).toThrow(/your_rank is not a number or null/);
    expect(() => parseLeaderboard({ week: '2026-W49', rows: [{ ...row, you: 1 }], your_rank: 1 })).toThrow(/rows\[0\]\.you is not a boolean/);
  });

  it('reads a linked wallet, none, a challenge, and refuses a wrong shape', () => {
    const w = { address: 'EsYK3yYqstHxpy2FKt92Lhs3K8Cjs9Cyg46Q2NHkzoW5', linked_at: '2026-12-02T10:00:00Z', chain_id: 'devnet' };
    expect(parseWallet(w)).toEqual(w);
    expect(parseWalletState({ wallet: w, events: [{ action: 'link', address: w.address, at: w.linked_at }] }).wallet).toEqual(w);
    expect(parseWalletState({ wallet: null, events: [] }).wallet).toBeNull();
    expect(() => parseWalletState({ events: [] })).toThrow(/wallet: wallet is not an object or null/);
    expect(() => parseWalletState({ wallet: { ...w, chain_id: 5 }, events: [] })).toThrow(/wallet\.chain_id is not a string/);
    expect(parseWalletChallenge({ message: 'm', nonce: 'n', expires_at: 't' }).message).toBe('m');
    expect(() => parseWalletChallenge({ message: 'm', expires_at: 't' })).toThrow(/wallet challenge: nonce is not a string/);
  });
});

describe('epochTotals', () => {
  it('sums pending first, then each epoch, and leaves reversed credits out', () => {
    const t = epochTotals([
      credit({ entry_id: 'a', points: 1.5 }),
      credit({ entry_id: 'b', points: 2.25, status: 'in_epoch', epoch_id: '2026-W49' }),
      credit({ entry_id: 'c', points: 0.75, status: 'in_epoch', epoch_id: '2026-W49' }),
      credit({ entry_id: 'd', points: 9, status: 'reversed' }),
      credit({ entry_id: 'e', points: 4, status: 'paid', epoch_id: '2026-W48' }),
      credit({ entry_id: 'f', points: 0.1, status: 'pending' }),
    ]);
    expect(t).toEqual([
      { epoch_id: '', status: 'pending', points: 1.6, credits: 2 },
      { epoch_id: '2026-W49', status: 'in_epoch', points: 3, credits: 2 },
      { epoch_id: '2026-W48', status: 'paid', points: 4, credits: 1 },
    ]);
  });
});

describe('creditWhy', () => {
  it('spells out segment-v1: seconds, quality and its parts, scarcity per command class', () => {
    const why = creditWhy(credit());
    expect(why[0]).toBe('10 s × quality 1.188 × scarcity 1.2 × 1 points/s = 14.25 points');
    expect(why[1]).toBe('quality = diffusion 1 × clean 0.95 (infractions −0.05) × progress 1.25');
    expect(why[2]).toBe('scarcity: follow 8 s at ×1, turn 2 s at ×2');
    expect(why).toHaveLength(3);
    expect(creditWhy(credit({ factors: { ...factors, diffusion: 1.25, diffusion_share: 0.5 } }))[1])
      .toMatch(/^quality = diffusion 1.25 \(50% of frames diffused\) × /);
  });

  it('says when the daily cap cut a credit, and lists an unknown rule as it is', () => {
    expect(creditWhy(credit({ points: 4, note: 'daily cap reached' })).at(-1)).toBe('credited 4 of 14.25: daily cap reached');
    expect(creditWhy(credit({ rule: 'flat-v0', factors: { seconds: 3 } }))).toEqual(['flat-v0: seconds 3']);
  });
});

describe('the client asks for the rewards views', () => {
  it('with the page, the week and the device token, and refuses a malformed answer', async () => {
    const urls: string[] = [];
    const answers: Record<string, unknown> = {
      '/v1/players/me/contributions?page_size=20&page_token=tok%2F2': contributions(),
      '/v1/leaderboard?week=2026-W49': { week: '2026-W49', rows: [], your_rank: null },
      '/v1/leaderboard': { week: '2026-W49', rows: 'none', your_rank: null },
    };
    const auth: string[] = [];
    const client = new GatewayClient({
      storage: { getItem: () => 'tok-1', setItem: () => {}, removeItem: () => {} }, sleep: async () => {},
      fetch: (async (input: RequestInfo | URL, init?: RequestInit) => {
        urls.push(String(input));
        auth.push((init?.headers as Record<string, string>).Authorization);
        return new Response(JSON.stringify(answers[String(input)]), { status: 200 });
      }) as typeof fetch,
    });
    expect((await client.contributions(20, 'tok/2')).credits).toHaveLength(1);
    expect((await client.leaderboard('2026-W49')).week).toBe('2026-W49');
    await expect(client.leaderboard()).rejects.toThrow(/leaderboard: rows is not a list/);
    expect(urls).toEqual(Object.keys(answers));
    expect(new Set(auth)).toEqual(new Set(['Bearer tok-1']));
  });
});

describe('ISO weeks for the leaderboard', () => {
  it('names the week of a day and steps across years, 53-week years included', () => {
    expect(isoWeek(new Date('2026-12-02T10:00:00Z'))).toBe('2026-W49');
    expect(isoWeek(new Date('2026-01-01T00:00:00Z'))).toBe('2026-W01');
    expect(isoWeek(new Date('2021-01-03T23:59:59Z'))).toBe('2020-W53');
    expect(shiftWeek('2026-W49', -1)).toBe('2026-W48');
    expect(shiftWeek('2026-W01', -1)).toBe('2025-W52');
    expect(shiftWeek('2021-W01', -1)).toBe('2020-W53');
    expect(shiftWeek('2020-W53', 1)).toBe('2021-W01');
    expect(() => shiftWeek('2026-49', 1)).toThrow(/not an ISO week/);
  });
});
