import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { BARCODE_CELLS, MAX_FRAME_ID, barcodeCells, defaultCellPx, encodeBarcode, readBarcode } from '../src/record/barcode';

// Made by services/common/.../session_format/barcode.py (web/tests/fixtures/make_barcode_fixture.py).
const fixture = JSON.parse(readFileSync(new URL('./fixtures/barcode_python.json', import.meta.url), 'utf8')) as {
  encode: { frame_id: number; cells: number[] }[];
  strips: { width: number; height: number; cell_px: number; frame_id: number; first_row: number[]; read: number }[];
};

/** Draws the cells into a grey luma image the way the game clears them (WebGL rows bottom-up). */
function drawLuma(frameId: number, width: number, height: number, cellPx: number): Uint8Array {
  const img = new Uint8Array(width * height).fill(128);
  for (const c of barcodeCells(frameId, cellPx, width, height)) {
    for (let gy = c.y; gy < c.y + c.size; gy++) {
      const row = height - 1 - gy; // GL row 0 is the image's bottom row
      img.fill(c.white ? 255 : 0, row * width + c.x, row * width + c.x + c.size);
    }
  }
  return img;
}

describe('frame-index barcode', () => {
  it('encodes every fixture id into the same 23 cells as the Python reference', () => {
    expect(fixture.encode.length).toBeGreaterThan(10);
    for (const { frame_id, cells } of fixture.encode) expect(encodeBarcode(frame_id)).toEqual(cells);
  });

  it('draws the same pixels as barcode.draw and reads back with the spec rule', () => {
    for (const s of fixture.strips) {
      expect(defaultCellPx(s.height)).toBe(s.cell_px);
      const img = drawLuma(s.frame_id, s.width, s.height, s.cell_px);
      const top = Array.from(img.subarray((s.height - s.cell_px) * s.width, (s.height - s.cell_px) * s.width + BARCODE_CELLS * s.cell_px));
      expect(top).toEqual(s.first_row);
      expect(readBarcode(img, s.width, s.height, s.cell_px)).toBe(s.read);
    }
  });

  it('uses 16 px cells at 720p, 8 px at 360p, never below 4 px', () => {
    expect(defaultCellPx(720)).toBe(16);
    expect(defaultCellPx(360)).toBe(8);
    expect(defaultCellPx(100)).toBe(4);
  });

  it('round-trips ids and rejects a single flipped cell', () => {
    for (const id of [0, 1, 2, 1003, 54321, MAX_FRAME_ID]) {
      const img = drawLuma(id, 640, 360, 8);
      expect(readBarcode(img, 640, 360, 8)).toBe(id);
      for (const cell of [0, 1, 7, 22]) {
        const bad = img.slice();
        const row = 360 - 4;
        bad[row * 640 + cell * 8 + 4] = bad[row * 640 + cell * 8 + 4] > 127 ? 0 : 255;
        for (let r = 356; r < 360; r++) for (let x = 0; x < 8; x++) bad[r * 640 + cell * 8 + x] = img[r * 640 + cell * 8 + x] > 127 ? 0 : 255;
        for (let r = 352; r < 356; r++) for (let x = 0; x < 8; x++) bad[r * 640 + cell * 8 + x] = img[r * 640 + cell * 8 + x] > 127 ? 0 : 255;
        expect(readBarcode(bad, 640, 360, 8)).toBeNull();
      }
    }
    expect(() => encodeBarcode(MAX_FRAME_ID + 1)).toThrow();
    expect(() => encodeBarcode(-1)).toThrow();
    expect(() => barcodeCells(0, 16, 300, 100)).toThrow(); // 23 x 16 px does not fit 300 px
  });
});
