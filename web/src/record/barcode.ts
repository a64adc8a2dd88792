/**
 * The frame-index barcode of session format v1 (docs/session-format.md §5), identical cell for cell
 * to services/common/src/sd_common/session_format/barcode.py: 23 square cells along the bottom edge
 * from the left: markers 1, 0; the 20 bits of frame_id, most significant first; even parity.
 */

export const BARCODE_CELLS = 23;
export const BARCODE_BITS = 20;
export const BARCODE_MARKER: readonly [1, 0] = [1, 0];
export const BARCODE_THRESHOLD = 127;
export const MAX_FRAME_ID = (1 << BARCODE_BITS) - 1;

/** The cell size the game uses for a video of this height: 16 px at 720p, 8 px at 360p, never below 4. */
export function defaultCellPx(height: number): number {
  return Math.max(4, Math.floor(height / 45));
}

/** The 23 cell values (1 white, 0 black) that show `frameId`. */
export function encodeBarcode(frameId: number): number[] {
  if (!Number.isInteger(frameId) || frameId < 0 || frameId > MAX_FRAME_ID) {
    throw new RangeError(`frame_id ${frameId} is outside 0..${MAX_FRAME_ID}`);
  }
  const data: number[] = [];
  for (let i = 0; i < BARCODE_BITS; i++) data.push((frameId >> (BARCODE_BITS - 1 - i)) & 1);
  const parity = data.reduce((a, b) => a + b, 0) & 1;
  return [...BARCODE_MARKER, ...data, parity];
}

export interface BarcodeCell {
  /** Scissor rectangle in WebGL's bottom-left origin: x, y, width, height in pixels. */
  x: number;
  y: number;
  size: number;
  white: boolean;
}

/** The cells to clear, as WebGL scissor rectangles (origin bottom-left). */
export function barcodeCells(frameId: number, cellPx: number, width: number, height: number): BarcodeCell[] {
  if (BARCODE_CELLS * cellPx > width || cellPx > height) {
    throw new RangeError(`a ${BARCODE_CELLS * cellPx}x${cellPx} barcode does not fit a ${width}x${height} image`);
  }
  return encodeBarcode(frameId).map((bit, k) => ({ x: k * cellPx, y: 0, size: cellPx, white: bit === 1 }));
}

/**
 * Reads the frame id from a luma plane (row 0 at the top), by the reading rule of the spec: mean of
 * the inner half of each cell, threshold 127. Null when the markers or the parity do not check.
 */
export function readBarcode(luma: ArrayLike<number>, width: number, height: number, cellPx: number,
  threshold = BARCODE_THRESHOLD): number | null {
  if (BARCODE_CELLS * cellPx > width || cellPx > height) return null;
  const inset = Math.floor(cellPx / 4);
  const size = Math.max(1, cellPx - 2 * inset);
  const y0 = height - cellPx + inset;
  const bits: number[] = [];
  for (let k = 0; k < BARCODE_CELLS; k++) {
    let sum = 0;
    for (let r = 0; r < size; r++) {
      const row = (y0 + r) * width + k * cellPx + inset;
      for (let c = 0; c < size; c++) sum += luma[row + c];
    }
    bits.push(sum / (size * size) > threshold ? 1 : 0);
  }
  if (bits[0] !== 1 || bits[1] !== 0) return null;
  const data = bits.slice(2, 2 + BARCODE_BITS);
  if ((data.reduce((a, b) => a + b, 0) + bits[BARCODE_CELLS - 1]) & 1) return null;
  return data.reduce((acc, b) => acc * 2 + b, 0);
}
