/** The game's score for a drive: metres of route completed, a bonus for reaching the goal, penalties per infraction. */
import type { InfractionKind } from './infractions';

export const PENALTY: Record<InfractionKind, number> = {
  collision_pedestrian: 200,
  collision_vehicle: 100,
  collision_static: 100,
  red_light: 75,
  stop_sign: 50,
  wrong_way: 50,
  off_road: 25,
};
export const GOAL_BONUS = 250;

export function driveScore(routeDone_m: number, infractions: readonly { kind: InfractionKind }[], finished: boolean): number {
  const penalty = infractions.reduce((a, i) => a + PENALTY[i.kind], 0);
  return Math.round(routeDone_m + (finished ? GOAL_BONUS : 0) - penalty);
}
