import { describe, expect, it } from 'vitest';
import { DISCONNECT_GRACE_MS, STALL_MS, StreamWatch } from '../src/media/diffusion';

describe('when the game counts a diffusion stream as lost', () => {
  it('is live while frames keep coming back', () => {
    const w = new StreamWatch();
    expect(w.lost(0)).toBeNull(); // no frame yet: connecting is not the watch's business
    for (let t = 0; t <= 10_000; t += 100) {
      w.frame(t);
      expect(w.lost(t + 50)).toBeNull();
    }
  });

  it('is lost once no new frame came back for the stall time', () => {
    const w = new StreamWatch();
    w.frame(1000);
    expect(w.lost(1000 + STALL_MS - 1)).toBeNull();
    expect(w.lost(1000 + STALL_MS)).toBe(`no frame came back for ${(STALL_MS / 1000).toFixed(1)} s`);
    w.frame(1000 + STALL_MS + 10); // a late frame brings it back while the game has not acted yet
    expect(w.lost(1000 + STALL_MS + 20)).toBeNull();
  });

  it('is lost at once when the peer connection fails or closes', () => {
    for (const state of ['failed', 'closed']) {
      const w = new StreamWatch();
      w.frame(0);
      w.state(state, 10);
      expect(w.lost(11)).toBe(`the connection ${state}`);
      w.frame(12);
      w.state('connected', 13);
      expect(w.lost(14)).toBe(`the connection ${state}`); // an ended connection stays ended
    }
  });

  it('gives a disconnected connection the grace time to come back', () => {
    const w = new StreamWatch(60_000); // frames are not what this checks
    w.frame(0);
    w.state('disconnected', 100);
    expect(w.lost(100 + DISCONNECT_GRACE_MS - 1)).toBeNull();
    w.state('connected', 100 + DISCONNECT_GRACE_MS - 1);
    expect(w.lost(100 + 10 * DISCONNECT_GRACE_MS)).toBeNull();
    w.state('disconnected', 50_000);
    expect(w.lost(50_000 + DISCONNECT_GRACE_MS)).toBe(`the connection stayed disconnected for ${DISCONNECT_GRACE_MS / 1000} s`);
  });
});
