import { useCallback, useEffect, useState } from 'react';
import type { Game } from '../game/controller';
import {
  creditWhy, epochTotals, isoWeek, shiftWeek, type Contributions, type Credit, type Leaderboard, type WalletState,
} from '../record/rewards';
import { WalletError, findProvider, linkWallet } from '../record/wallet';

/** A view that is loading, loaded, or failed with the reason to show. */
type Loaded<T> = { data: T | null; error: string | null; loading: boolean };
const loading = <T,>(): Loaded<T> => ({ data: null, error: null, loading: true });
const message = (e: unknown) => (e instanceof Error ? e.message : String(e));
/** What ``fetch`` gave, or why it failed, as a loaded view. */
async function settle<T>(fetch: () => Promise<T>): Promise<Loaded<T>> {
  try {
    return { data: await fetch(), error: null, loading: false };
  } catch (e) {
    return { data: null, error: message(e), loading: false };
  }
}
const pts = (x: number) => x.toFixed(3);
const STATUS_TEXT: Record<string, string> = { pending: 'pending', in_epoch: 'in a payout', paid: 'paid', reversed: 'reversed' };

/**
 * The contributions page: the wallet (linked, or a button that links one with Sign-In With Solana),
 * the balances and their payout epochs, every credited segment with why it is worth what it is, and
 * the weekly leaderboard. Addressable for browser tests (data-testid): `contributions-page`,
 * `contrib-pending|in-epoch|paid|today|accepted-s` (data-value), `contrib-epoch` rows, `contrib-credit`
 * rows (data-session, data-segment, data-points, data-status), `leaderboard-row` (data-rank, data-you,
 * data-points), `wallet-address` (data-address), `wallet-link`, `wallet-unlink`, `wallet-error`
 * (data-kind), and each section's `*-error`.
 */
export function ContributionsPage({ game, onClose, refreshKey = null }: {
  game: Game; onClose: () => void;
  /** Changes when there may be new credits (a drive's outcome became final while the page is open). */
  refreshKey?: string | null;
}) {
  const client = game.client;
  const [contrib, setContrib] = useState<Loaded<Contributions>>(loading);
  const [board, setBoard] = useState<Loaded<Leaderboard>>(loading);
  const [wallet, setWallet] = useState<Loaded<WalletState>>(loading);
  const [week, setWeek] = useState(() => isoWeek(new Date()));
  const [walletBusy, setWalletBusy] = useState<string | null>(null);
  const [walletError, setWalletError] = useState<{ kind: string; text: string } | null>(null);
  const [more, setMore] = useState<{ busy: boolean; error: string | null }>({ busy: false, error: null });

  const ready = useCallback(async () => {
    if (!client.token) await client.ensurePlayer();
  }, [client]);

  const loadContributions = useCallback(async () => {
    setContrib(await settle(async () => { await ready(); return client.contributions(); }));
  }, [client, ready]);

  const loadWallet = useCallback(async () => {
    setWallet(await settle(async () => { await ready(); return client.wallet(); }));
  }, [client, ready]);

  useEffect(() => {
    void loadWallet();
  }, [loadWallet]);

  useEffect(() => {
    void loadContributions();
  }, [loadContributions, refreshKey]);

  useEffect(() => {
    let live = true;
    setBoard((b) => ({ ...b, loading: true }));
    void (async () => {
      const loaded = await settle(async () => { await ready(); return client.leaderboard(week); });
      if (live) setBoard(loaded);
    })();
    return () => { live = false; };
  }, [client, ready, week, refreshKey]);

  const loadMore = async () => {
    const c = contrib.data;
    if (!c?.next_page_token) return;
    setMore({ busy: true, error: null });
    try {
      const next = await client.contributions(50, c.next_page_token);
      setContrib({ data: { ...c, credits: [...c.credits, ...next.credits], next_page_token: next.next_page_token }, error: null, loading: false });
      setMore({ busy: false, error: null });
    } catch (e) {
      setMore({ busy: false, error: message(e) });
    }
  };

  const link = async () => {
    setWalletError(null);
    setWalletBusy('Waiting for your wallet: approve the connection, then sign the message (no transaction, no fee)…');
    try {
      await ready();
      await linkWallet(client, findProvider(window));
      await Promise.all([loadWallet(), loadContributions()]);
    } catch (e) {
      setWalletError({ kind: e instanceof WalletError ? e.kind : 'gateway', text: message(e) });
    } finally {
      setWalletBusy(null);
    }
  };

  const unlink = async () => {
    setWalletError(null);
    setWalletBusy('Unlinking…');
    try {
      await client.unlinkWallet();
      await Promise.all([loadWallet(), loadContributions()]);
    } catch (e) {
      setWalletError({ kind: 'gateway', text: `The gateway did not unlink the wallet: ${message(e)}` });
    } finally {
      setWalletBusy(null);
    }
  };

  const c = contrib.data;
  const thisWeek = isoWeek(new Date());
  return (
    <div className="screen contributions" data-testid="contributions-page">
      <div className="card wide">
        <div className="page-head">
          <h2>Your contributions</h2>
          <button data-testid="contributions-close" onClick={onClose}>Back</button>
        </div>

        <section data-testid="wallet">
          <h3>Wallet</h3>
          {wallet.loading && <p className="fineprint">Loading…</p>}
          {wallet.error && <p className="warn" data-testid="wallet-load-error">{wallet.error}</p>}
          {wallet.data?.wallet ? (
            <p>Rewards are paid to <code data-testid="wallet-address" data-address={wallet.data.wallet.address}>
              {wallet.data.wallet.address}</code> ({wallet.data.wallet.chain_id}), linked
              {' '}{new Date(wallet.data.wallet.linked_at).toLocaleString()}.{' '}
              <button data-testid="wallet-unlink" disabled={walletBusy !== null} onClick={() => void unlink()}>Unlink</button></p>
          ) : wallet.data && (
            <>
              <p>No wallet linked: your points stay pending until you link a Solana wallet, and a payout pays only
                linked wallets. Linking asks your wallet to sign a message; it never asks for a transaction.</p>
              <button className="primary" data-testid="wallet-link" disabled={walletBusy !== null} onClick={() => void link()}>
                Link wallet</button>
            </>
          )}
          {walletBusy && <p className="fineprint" data-testid="wallet-busy">{walletBusy}</p>}
          {walletError && <p className="warn" data-testid="wallet-error" data-kind={walletError.kind}>{walletError.text}</p>}
        </section>

        <section data-testid="contrib-totals">
          <h3>Rewards</h3>
          {contrib.loading && <p className="fineprint">Loading…</p>}
          {contrib.error && <p className="warn" data-testid="contributions-error">{contrib.error}</p>}
          {c && (
            <>
              <div className="totals-grid">
                <Total id="contrib-pending" label="pending" value={c.pending_points} />
                <Total id="contrib-in-epoch" label="in a payout" value={c.in_epoch_points} />
                <Total id="contrib-paid" label="paid" value={c.paid_points} />
                <Total id="contrib-today" label={`today (cap ${pts(c.daily_cap_points)})`} value={c.today_points} />
              </div>
              <p className="fineprint" data-testid="contrib-accepted-s" data-value={c.accepted_s}>
                {c.accepted_s.toFixed(1)} s of your driving accepted in all.</p>
              <EpochTable credits={c.credits} partial={c.next_page_token !== ''} />
            </>
          )}
        </section>

        <section>
          <h3>Credited segments</h3>
          {c && c.credits.length === 0 && <p className="fineprint" data-testid="contrib-none">
            Nothing credited yet: record a drive, and its accepted segments appear here once processed.</p>}
          {c && c.credits.length > 0 && (
            <table className="credits" data-testid="contrib-credits">
              <thead><tr><th>When</th><th>Segment</th><th>Points</th><th>Status</th><th>Why</th></tr></thead>
              <tbody>{c.credits.map((x) => <CreditRow key={x.entry_id} credit={x} />)}</tbody>
            </table>
          )}
          {c?.next_page_token && (
            <button data-testid="contrib-more" disabled={more.busy} onClick={() => void loadMore()}>Older credits</button>
          )}
          {more.error && <p className="warn">{more.error}</p>}
        </section>

        <section data-testid="leaderboard">
          <div className="page-head">
            <h3>Leaderboard · <span data-testid="leaderboard-week">{week}</span></h3>
            <div className="buttons tight">
              <button data-testid="leaderboard-prev" onClick={() => setWeek((w) => shiftWeek(w, -1))}>◀ Earlier</button>
              <button data-testid="leaderboard-next" disabled={week >= thisWeek} onClick={() => setWeek((w) => shiftWeek(w, 1))}>Later ▶</button>
            </div>
          </div>
          {board.error && <p className="warn" data-testid="leaderboard-error">{board.error}</p>}
          {board.data && board.data.rows.length === 0 && <p className="fineprint">No points credited in {board.data.week}.</p>}
          {board.data && board.data.rows.length > 0 && (
            <table className="leaderboard">
              <thead><tr><th>#</th><th>Player</th><th>Points</th><th>Accepted</th></tr></thead>
              <tbody>
                {board.data.rows.map((r) => (
                  <tr key={r.rank} className={r.you ? 'you' : ''} data-testid="leaderboard-row" data-rank={r.rank}
                    data-you={r.you ? 'true' : 'false'} data-points={r.points}>
                    <td>{r.rank}</td><td>{r.you ? 'you' : r.player_label}</td><td>{pts(r.points)}</td><td>{r.accepted_s.toFixed(0)} s</td>
                  </tr>
                ))}
              </tbody>
            </table>
          )}
          {board.data && (
            <p className="fineprint" data-testid="leaderboard-your-rank" data-value={board.data.your_rank ?? ''}>
              {board.data.your_rank ? `You are #${board.data.your_rank} this week.` : 'You have no points in this week.'}</p>
          )}
        </section>
      </div>
    </div>
  );
}

function Total({ id, label, value }: { id: string; label: string; value: number }) {
  return (
    <div className="total">
      <b data-testid={id} data-value={value}>{pts(value)}</b>
      <span>{label}</span>
    </div>
  );
}

function EpochTable({ credits, partial }: { credits: Credit[]; partial: boolean }) {
  const rows = epochTotals(credits);
  if (rows.length === 0) return null;
  return (
    <table className="epochs">
      {partial && <caption className="fineprint">Of the credits shown; older ones load below.</caption>}
      <thead><tr><th>Payout</th><th>Points</th><th>Segments</th></tr></thead>
      <tbody>
        {rows.map((t) => (
          <tr key={t.epoch_id || 'pending'} data-testid="contrib-epoch" data-epoch={t.epoch_id} data-status={t.status} data-value={t.points}>
            <td>{t.epoch_id ? `${t.epoch_id} (${STATUS_TEXT[t.status] ?? t.status})` : 'not yet in a payout'}</td>
            <td>{pts(t.points)}</td><td>{t.credits}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

function CreditRow({ credit: x }: { credit: Credit }) {
  const seg = /_(\d+)$/.exec(x.segment_id);
  return (
    <tr data-testid="contrib-credit" data-session={x.session_id} data-segment={x.segment_id} data-points={x.points}
      data-status={x.status} className={x.status === 'reversed' ? 'reversed' : ''}>
      <td>{new Date(x.created_at).toLocaleString()}</td>
      <td title={x.segment_id}>{seg ? `segment ${Number(seg[1]) + 1}` : x.segment_id}<br />
        <span className="fineprint" title={x.session_id}>session …{x.session_id.slice(-8)}</span></td>
      <td>{pts(x.points)}</td>
      <td>{STATUS_TEXT[x.status] ?? x.status}{x.epoch_id && <><br /><span className="fineprint">{x.epoch_id}</span></>}</td>
      <td className="why" data-testid="contrib-why">
        <span className="fineprint">{x.rule}</span>
        {creditWhy(x).map((line, i) => <div key={i}>{line}</div>)}
      </td>
    </tr>
  );
}
