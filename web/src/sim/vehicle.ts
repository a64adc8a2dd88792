/**
 * Vehicle dynamics: a kinematic bicycle model about the centre of the footprint, with steering-rate,
 * lateral-acceleration, power, braking and drag limits, integrated at a fixed timestep in SI units.
 * Pure arithmetic on plain numbers: the same controls always give the same trajectory, bit for bit.
 */
import { clamp, wrapAngle } from './geometry';

export interface VehicleParams {
  wheelbase_m: number;
  length_m: number;
  width_m: number;
  maxSteer_rad: number;
  steerRate_radps: number;
  maxLateralAccel_mps2: number;
  maxAccel_mps2: number;
  /** Engine power over mass, W/kg: caps acceleration at speed. */
  powerPerMass_wpkg: number;
  maxBrake_mps2: number;
  maxSpeed_mps: number;
  maxReverseSpeed_mps: number;
  /** Aerodynamic drag 0.5 * rho * Cd * A / m, 1/m. */
  dragPerMass_pm: number;
  rollingResistance_mps2: number;
}

/** A mid-size sedan, like the evaluator's Lincoln MKZ. */
export const SEDAN: VehicleParams = {
  wheelbase_m: 2.9,
  length_m: 4.9,
  width_m: 2.0,
  maxSteer_rad: 35 * (Math.PI / 180),
  steerRate_radps: 1.6,
  maxLateralAccel_mps2: 7.5,
  maxAccel_mps2: 4.0,
  powerPerMass_wpkg: 75,
  maxBrake_mps2: 8.5,
  maxSpeed_mps: 45,
  maxReverseSpeed_mps: 5,
  dragPerMass_pm: 0.00028,
  rollingResistance_mps2: 0.12,
};

export interface Controls {
  /** [-1, 1], negative left. */
  steer: number;
  /** [0, 1] */
  throttle: number;
  /** [0, 1] */
  brake: number;
}

export interface VehicleState {
  x: number;
  y: number;
  /** Heading, rad, counter-clockwise from east. */
  yaw: number;
  /** Signed speed along the heading, m/s (negative in reverse). */
  v: number;
  /** Front wheel angle, rad, positive left. */
  steerAngle: number;
  /** 1 drive, -1 reverse. */
  gear: 1 | -1;
  /** Longitudinal acceleration of the last step, m/s^2. */
  accel: number;
  /** The brake has been held since before the car stopped (so it holds, not reverses). */
  brakeLatch: boolean;
}

export function makeVehicle(x: number, y: number, yaw: number): VehicleState {
  return { x, y, yaw, v: 0, steerAngle: 0, gear: 1, accel: 0, brakeLatch: false };
}

/** The largest wheel angle at speed v that keeps lateral acceleration within the limit. */
export function steerLimit(p: VehicleParams, v: number): number {
  const v2 = v * v;
  if (v2 < 1e-6) return p.maxSteer_rad;
  return Math.min(p.maxSteer_rad, Math.atan((p.wheelbase_m * p.maxLateralAccel_mps2) / v2));
}

/** Advances the vehicle by dt seconds under `c`, in place. */
export function stepVehicle(s: VehicleState, c: Controls, dt: number, p: VehicleParams = SEDAN): void {
  const steer = clamp(c.steer, -1, 1);
  const throttle = clamp(c.throttle, 0, 1);
  const brake = clamp(c.brake, 0, 1);

  // Gear: pressing the brake afresh at a standstill selects reverse (a brake held while stopping
  // just holds the car); the throttle at a standstill selects drive again.
  if (Math.abs(s.v) < 0.05) {
    if (s.gear === 1 && brake > 0.5 && throttle === 0 && !s.brakeLatch) s.gear = -1;
    else if (s.gear === -1 && throttle > 0.05) s.gear = 1;
  } else if (brake > 0.5 && s.gear === 1) {
    s.brakeLatch = true;
  }
  if (brake < 0.2) s.brakeLatch = false;
  // In reverse the pedals swap roles: brake drives backwards, throttle brakes.
  const drive = s.gear === 1 ? throttle : brake;
  const stop = s.gear === 1 ? brake : throttle;

  const speed = Math.abs(s.v);
  const sign = s.v > 0 ? 1 : s.v < 0 ? -1 : 0;
  const powerAccel = speed > 0.5 ? p.powerPerMass_wpkg / speed : Infinity;
  const driveAccel = drive * Math.min(p.maxAccel_mps2, powerAccel) * s.gear;
  const resist = p.dragPerMass_pm * s.v * speed + (speed > 0.01 ? p.rollingResistance_mps2 : 0) * sign;
  const brakeAccel = stop * p.maxBrake_mps2;
  let v = s.v + (driveAccel - resist) * dt;
  if (sign === 0) {
    // From a standstill the car moves only when the drive pedal beats the other one.
    v = s.gear * Math.max(0, Math.abs(driveAccel) - brakeAccel) * dt;
  } else {
    // Brakes and resistance stop the car; they never push it the other way.
    const vb = v - brakeAccel * sign * dt;
    v = Math.sign(vb) === sign || vb === 0 ? vb : 0;
    if (drive === 0 && Math.sign(v) !== sign) v = 0;
  }
  v = s.gear === 1 ? clamp(v, 0, p.maxSpeed_mps) : clamp(v, -p.maxReverseSpeed_mps, 0);
  s.accel = (v - s.v) / dt;

  // Steering: the wheel follows the input at a finite rate; input -1 (left) is a positive angle.
  const target = -steer * steerLimit(p, v);
  const maxDelta = p.steerRate_radps * dt;
  s.steerAngle += clamp(target - s.steerAngle, -maxDelta, maxDelta);

  // Kinematic bicycle about the footprint centre (rear axle at half the wheelbase behind it).
  const lr = p.wheelbase_m / 2;
  const beta = Math.atan(0.5 * Math.tan(s.steerAngle));
  const vm = (s.v + v) / 2;
  s.yaw = wrapAngle(s.yaw + (vm / lr) * Math.sin(beta) * dt);
  s.x += vm * Math.cos(s.yaw + beta) * dt;
  s.y += vm * Math.sin(s.yaw + beta) * dt;
  s.v = v;
}
