/**
 * Field-by-field checks of the gateway's JSON answers. A parser built from these names the first field
 * that does not have the documented shape (docs/api.md), so a changed gateway fails loudly instead of
 * drawing NaN points.
 */

/** Thrown when an answer of the gateway does not have its documented shape; the message names the field. */
export class ShapeError extends Error {}

export type Fields = Record<string, unknown>;

/** Checks of one answer; every message starts with `what` ("outcome", "contributions", …). */
export function shape(what: string, make: (message: string) => Error = (m) => new ShapeError(m)) {
  const fail = (where: string, is: string): never => { throw make(`${what}: ${where} is not ${is}`); };
  return {
    fail,
    obj(v: unknown, where = 'the answer'): Fields {
      if (typeof v !== 'object' || v === null || Array.isArray(v)) fail(where, 'an object');
      return v as Fields;
    },
    num(v: unknown, where: string): number {
      if (typeof v !== 'number' || !Number.isFinite(v)) fail(where, 'a number');
      return v as number;
    },
    str(v: unknown, where: string): string {
      if (typeof v !== 'string') fail(where, 'a string');
      return v as string;
    },
    bool(v: unknown, where: string): boolean {
      if (typeof v !== 'boolean') fail(where, 'a boolean');
      return v as boolean;
    },
    list(v: unknown, where: string): unknown[] {
      if (!Array.isArray(v)) fail(where, 'a list');
      return v as unknown[];
    },
  };
}
