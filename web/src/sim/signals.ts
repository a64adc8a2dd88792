/** Traffic lights: two phase groups per signalled junction (the two street axes), fixed-time cycles. */
import type { RoadNetwork } from './roads';
import { Rng } from './rng';

export type LightState = 'green' | 'yellow' | 'red';

export const GREEN_A_S = 16;
export const GREEN_B_S = 12;
export const YELLOW_S = 3;
export const ALL_RED_S = 1.5;
export const CYCLE_S = GREEN_A_S + GREEN_B_S + 2 * (YELLOW_S + ALL_RED_S);

export class Signals {
  /** Per DirEdge arriving at a signalled junction: its phase group (0 or 1); -1 elsewhere. */
  readonly group: Int8Array;
  /** Per node: cycle offset in seconds; NaN for junctions without lights. */
  readonly offset: Float64Array;
  /** Per node: the street axis (rad, modulo pi) of phase group 0. */
  readonly axis0: Float64Array;

  constructor(readonly net: RoadNetwork, seed: number) {
    const rng = new Rng(seed ^ 0x51a11);
    this.group = new Int8Array(net.dirEdges.length).fill(-1);
    this.offset = new Float64Array(net.nodes.length).fill(NaN);
    this.axis0 = new Float64Array(net.nodes.length).fill(NaN);
    net.junctions.forEach((j, n) => {
      if (net.nodes[n].control !== 'signal' || j.degree < 3) return;
      this.offset[n] = rng.range(0, CYCLE_S);
      let axis0 = NaN;
      for (const d of j.incoming) {
        const line = net.dirEdges[d].line;
        const h = line.sample(line.length).heading;
        const axis = ((h % Math.PI) + Math.PI) % Math.PI;
        if (Number.isNaN(axis0)) axis0 = axis;
        const diff = Math.abs(axis - axis0);
        const sep = Math.min(diff, Math.PI - diff);
        this.group[d] = sep < Math.PI / 4 ? 0 : 1;
      }
      this.axis0[n] = axis0;
    });
  }

  hasLights(node: number): boolean {
    return !Number.isNaN(this.offset[node]);
  }

  /** State of a phase group at time t_s. */
  groupState(node: number, group: number, t_s: number): LightState {
    const tau = (((t_s + this.offset[node]) % CYCLE_S) + CYCLE_S) % CYCLE_S;
    if (group === 0) {
      if (tau < GREEN_A_S) return 'green';
      if (tau < GREEN_A_S + YELLOW_S) return 'yellow';
      return 'red';
    }
    const b0 = GREEN_A_S + YELLOW_S + ALL_RED_S;
    if (tau >= b0 && tau < b0 + GREEN_B_S) return 'green';
    if (tau >= b0 + GREEN_B_S && tau < b0 + GREEN_B_S + YELLOW_S) return 'yellow';
    return 'red';
  }

  /** The light facing traffic that arrives on DirEdge `de`; green where there is none. */
  stateFor(de: number, t_s: number): LightState {
    const g = this.group[de];
    if (g < 0) return 'green';
    return this.groupState(this.net.dirEdges[de].to, g, t_s);
  }

  /** Phase group of traffic moving along `heading` (rad) through a signalled node. */
  axisGroup(node: number, heading: number): number {
    const axis = ((heading % Math.PI) + Math.PI) % Math.PI;
    const diff = Math.abs(axis - this.axis0[node]);
    return Math.min(diff, Math.PI - diff) < Math.PI / 4 ? 0 : 1;
  }

  /**
   * May pedestrians cross a street whose traffic runs along `streetHeading` at `node`? Only while
   * that street's traffic is red and the crossing street's is green.
   */
  walkAcross(node: number, streetHeading: number, t_s: number): boolean {
    if (!this.hasLights(node)) return true;
    const g = this.axisGroup(node, streetHeading);
    return this.groupState(node, g, t_s) === 'red' && this.groupState(node, 1 - g, t_s) === 'green';
  }
}
