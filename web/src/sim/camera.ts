/**
 * Camera mounts and poses. The recording camera defaults to the CARLA evaluator's CILRS agent camera
 * (1.3 m forward, 2.3 m up, 100 degrees horizontal field of view) so that training data and
 * evaluation see the same geometry. Poses follow docs/session-format.md §2.
 */
import { wrapDeg } from './geometry';

export interface CameraMount {
  x_m: number;
  y_m: number;
  z_m: number;
  pitch_deg: number;
  yaw_deg: number;
  roll_deg: number;
  /** Horizontal field of view. */
  fov_deg: number;
}

export const CARLA_FRONT_CAMERA: CameraMount = {
  x_m: 1.3, y_m: 0, z_m: 2.3, pitch_deg: 0, yaw_deg: 0, roll_deg: 0, fov_deg: 100,
};

export interface Pose {
  x_m: number;
  y_m: number;
  z_m: number;
  yaw_deg: number;
  pitch_deg: number;
  roll_deg: number;
}

/** The vehicle's pose (flat ground: no pitch or roll) from the simulation state. */
export function vehiclePose(x: number, y: number, yawRad: number): Pose {
  return { x_m: x, y_m: y, z_m: 0, yaw_deg: wrapDeg((yawRad * 180) / Math.PI), pitch_deg: 0, roll_deg: 0 };
}

/** The camera's pose in the city frame: the vehicle pose composed with the mount. */
export function cameraPose(x: number, y: number, yawRad: number, m: CameraMount): Pose {
  const c = Math.cos(yawRad);
  const s = Math.sin(yawRad);
  return {
    x_m: x + c * m.x_m - s * m.y_m,
    y_m: y + s * m.x_m + c * m.y_m,
    z_m: m.z_m,
    // The vehicle has no pitch or roll, so the rotations compose as a sum of yaws.
    yaw_deg: wrapDeg((yawRad * 180) / Math.PI + m.yaw_deg),
    pitch_deg: m.pitch_deg,
    roll_deg: m.roll_deg,
  };
}

/** Vertical field of view (degrees) for a horizontal one at an aspect ratio width/height. */
export function verticalFov(hfovDeg: number, width: number, height: number): number {
  return (2 * Math.atan(Math.tan((hfovDeg * Math.PI) / 360) * (height / width)) * 180) / Math.PI;
}

/**
 * Body axes of a pose in the city frame, R = Rz(yaw) Ry(-pitch) Rx(roll): forward, left and up
 * unit vectors.
 */
export function poseAxes(p: Pose): { forward: number[]; left: number[]; up: number[] } {
  const y = (p.yaw_deg * Math.PI) / 180;
  const pi = (p.pitch_deg * Math.PI) / 180;
  const r = (p.roll_deg * Math.PI) / 180;
  const cy = Math.cos(y), sy = Math.sin(y), cp = Math.cos(pi), sp = Math.sin(pi), cr = Math.cos(r), sr = Math.sin(r);
  // Columns of Rz(y) * Ry(-p) * Rx(r).
  return {
    forward: [cy * cp, sy * cp, sp],
    left: [-cy * sp * sr - sy * cr, -sy * sp * sr + cy * cr, cp * sr],
    up: [-cy * sp * cr + sy * sr, -sy * sp * cr - cy * sr, cp * cr],
  };
}
