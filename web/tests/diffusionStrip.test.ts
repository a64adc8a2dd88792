import { describe, expect, it } from 'vitest';
import { readStrip } from '../src/media/diffusion';
import { BARCODE_CELLS, defaultCellPx, encodeBarcode, MAX_FRAME_ID } from '../src/record/barcode';

/** The RGBA strip a returned frame's bottom-left corner holds: the service's cells, blurred a little by VP8. */
function strip(frameId: number, cell: number, noise = 0, tint = [0, 0, 0]): Uint8ClampedArray {
  const width = BARCODE_CELLS * cell;
  const px = new Uint8ClampedArray(width * cell * 4);
  const bits = encodeBarcode(frameId);
  let seed = frameId + 1;
  const rand = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31 - 0.5) * 2;
  for (let y = 0; y < cell; y++) {
    for (let x = 0; x < width; x++) {
      const v = bits[Math.floor(x / cell)] ? 255 : 0;
      for (let c = 0; c < 3; c++) px[4 * (y * width + x) + c] = v + tint[c] + noise * rand();
      px[4 * (y * width + x) + 3] = 255;
    }
  }
  return px;
}

describe('the id the diffusion service drew on a returned frame', () => {
  it('reads back at every size the game records', () => {
    for (const height of [180, 360, 720]) {
      const cell = defaultCellPx(height);
      for (const id of [0, 1, 517, 99_999, MAX_FRAME_ID]) {
        expect(readStrip(strip(id, cell), BARCODE_CELLS * cell, cell)).toBe(id);
        // codec noise and a colour cast of the stream do not change it
        expect(readStrip(strip(id, cell, 40, [-20, 10, 25]), BARCODE_CELLS * cell, cell)).toBe(id);
      }
    }
  });

  it('is null where no barcode is drawn or one cell is wrong', () => {
    const cell = 8;
    const grey = new Uint8ClampedArray(BARCODE_CELLS * cell * cell * 4).fill(128);
    expect(readStrip(grey, BARCODE_CELLS * cell, cell)).toBeNull();
    const flipped = strip(517, cell);
    for (let y = 0; y < cell; y++) {
      for (let x = 5 * cell; x < 6 * cell; x++) {
        for (let c = 0; c < 3; c++) flipped[4 * (y * BARCODE_CELLS * cell + x) + c] ^= 255;
      }
    }
    expect(readStrip(flipped, BARCODE_CELLS * cell, cell)).toBeNull(); // parity catches one flipped bit
  });
});
