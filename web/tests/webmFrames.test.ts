import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { WebmFormatError, WebmFrameCounter } from '../src/media/webmFrames';
import { ID, blockBody, clusterHead, concat, ebmlHeader, el, simpleBlock, sized, tracks, uint } from './webmBytes';

// A real recording: web/tests/fixtures/make_webm_fixture.mjs made it with headless Chromium.
const FIXTURE = fileURLToPath(new URL('./fixtures/mediarecorder_vp8.webm', import.meta.url));
const FIXTURE_INFO = JSON.parse(readFileSync(fileURLToPath(new URL('./fixtures/mediarecorder_vp8.json',
  import.meta.url)), 'utf8')) as { frames_handed_over: number };

/** The repository's Python (made by `make install`); missing, the test fails and says how to make it. */
function projectPython(): string {
  const python = fileURLToPath(new URL('../../.venv/bin/python', import.meta.url));
  if (!existsSync(python)) throw new Error(`no Python at ${python}: run \`make install\` at the repository root`);
  return python;
}

/** Where each video packet's data ends in a WebM file, as PyAV (libavformat's demuxer) reads it. */
function pyavPacketEnds(path: string): number[] {
  const out = spawnSync(projectPython(), ['-c', [
    'import sys, json, av',
    'c = av.open(sys.argv[1])',
    'print(json.dumps([p.pos + p.size for p in c.demux(video=0) if p.size]))',
  ].join('\n'), path], { encoding: 'utf8' });
  if (out.status !== 0) throw new Error(out.stderr);
  return JSON.parse(out.stdout) as number[];
}

function pyavVideoPackets(path: string): number {
  return pyavPacketEnds(path).length;
}

function countIn(bytes: Uint8Array, chunkSize: (i: number) => number = () => bytes.length): WebmFrameCounter {
  const c = new WebmFrameCounter();
  for (let at = 0, i = 0; at < bytes.length; i++) {
    const n = Math.max(1, chunkSize(i));
    c.push(bytes.subarray(at, at + n));
    at += n;
  }
  return c;
}

/** Deterministic pseudo-random chunk sizes in 1..max. */
function randomSizes(seed: number, max: number): () => number {
  let s = seed;
  return () => {
    s = (s * 1103515245 + 12345) % 2 ** 31;
    return 1 + (s % max);
  };
}

function contains(bytes: Uint8Array, pattern: number[]): boolean {
  outer: for (let i = 0; i + pattern.length <= bytes.length; i++) {
    for (let j = 0; j < pattern.length; j++) if (bytes[i + j] !== pattern[j]) continue outer;
    return true;
  }
  return false;
}

const UNKNOWN_SIZE = [0x01, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];

describe('WebM frame counter on a real MediaRecorder recording', () => {
  const bytes = new Uint8Array(readFileSync(FIXTURE));

  it('reads a Chromium file with an unknown-size Segment and Clusters, BlockGroups and SimpleBlocks', () => {
    expect(contains(bytes, [0x18, 0x53, 0x80, 0x67, ...UNKNOWN_SIZE])).toBe(true);
    expect(contains(bytes, [0x1f, 0x43, 0xb6, 0x75, ...UNKNOWN_SIZE])).toBe(true);
    const expected = FIXTURE_INFO.frames_handed_over;
    expect(pyavVideoPackets(FIXTURE)).toBe(expected);
    expect(countIn(bytes).videoFrames).toBe(expected);
  });

  it('counts the same however the bytes are split into chunks, one byte at a time included', () => {
    const expected = FIXTURE_INFO.frames_handed_over;
    expect(countIn(bytes, () => 1).videoFrames).toBe(expected);
    for (const seed of [1, 2, 3, 4, 5]) expect(countIn(bytes, randomSizes(seed, 300)).videoFrames).toBe(expected);
  });

  it('counts a block only once its last byte has arrived', () => {
    const c = new WebmFrameCounter();
    const grewAt: number[] = [];
    for (let i = 0; i < bytes.length; i++) {
      const before = c.videoFrames;
      c.push(bytes.subarray(i, i + 1));
      if (c.videoFrames !== before) {
        expect(c.videoFrames).toBe(before + 1);
        grewAt.push(i + 1);
      }
    }
    expect(grewAt).toHaveLength(FIXTURE_INFO.frames_handed_over);
    // Never before the frame's data, as the demuxer locates it, is all there.
    const ends = pyavPacketEnds(FIXTURE);
    grewAt.forEach((at, i) => expect(at).toBeGreaterThanOrEqual(ends[i]));
    // The last frame is a BlockGroup (a Block and its alpha BlockAdditions) closing the file: it
    // counts only with the file's last byte.
    expect(grewAt[grewAt.length - 1]).toBe(bytes.length);
    expect(countIn(bytes.subarray(0, bytes.length - 1)).videoFrames).toBe(FIXTURE_INFO.frames_handed_over - 1);
  });
});

describe('WebM frame counter on a libavformat (PyAV) recording', () => {
  it('counts what the project\'s VideoWriter wrote, as many as PyAV reads back', () => {
    const path = join(mkdtempSync(join(tmpdir(), 'sd-webm-')), 'pyav.webm');
    const out = spawnSync(projectPython(), ['-c', [
      'import sys, numpy as np',
      'from pathlib import Path',
      'from sd_common.session_format.video import VideoWriter',
      'with VideoWriter(Path(sys.argv[1]), 64, 48) as w:',
      '    for i in range(37):',
      '        w.write_i420(np.full((72, 64), (i * 7) % 256, np.uint8), i * 33)',
    ].join('\n'), path], { encoding: 'utf8' });
    expect(out.status, out.stderr).toBe(0);
    expect(pyavVideoPackets(path)).toBe(37);
    const bytes = new Uint8Array(readFileSync(path));
    expect(countIn(bytes).videoFrames).toBe(37);
    expect(countIn(bytes, randomSizes(9, 64)).videoFrames).toBe(37);
  });
});

describe('WebM frame counter on hand-built files', () => {
  const VIDEO = 1;
  const AUDIO = 2;

  it('ends an unknown-size Cluster at the next Cluster, at Cues, and the Segment at a new EBML header', () => {
    const cues = el(ID.CUES, el(ID.CUE_POINT, el(ID.CUE_TIME, uint(0))));
    const file = concat([
      ebmlHeader(), sized(ID.SEGMENT, null), tracks([[VIDEO, 1]]),
      clusterHead(0), simpleBlock(VIDEO), simpleBlock(VIDEO), clusterHead(70), simpleBlock(VIDEO), cues,
      // A chained second file: a frame on track 2 counts only because this Segment's Tracks say video.
      ebmlHeader(), sized(ID.SEGMENT, null), tracks([[AUDIO, 1]]), clusterHead(0), simpleBlock(AUDIO),
    ]);
    const c = countIn(file, randomSizes(3, 7));
    expect(c.videoFrames).toBe(4);
    // Without the end rule the Cues would sit inside the last Cluster and the second Tracks be missed.
    expect(c.framesByTrack.get(AUDIO)).toBe(1);
  });

  it('counts only video tracks, each frame of a laced block, and Blocks inside BlockGroups', () => {
    const file = concat([ebmlHeader(), sized(ID.SEGMENT, null), tracks([[VIDEO, 1], [AUDIO, 2]]),
      clusterHead(0), simpleBlock(VIDEO), simpleBlock(AUDIO, { laced: 5 }),
      el(ID.BLOCK_GROUP, el(ID.BLOCK, blockBody(VIDEO)), el(ID.BLOCK_DURATION, uint(33))),
      sized(ID.BLOCK_GROUP, null, el(ID.BLOCK, blockBody(VIDEO, { laced: 2 }))),
      simpleBlock(VIDEO, { laced: 3 }), el(ID.VOID, new Uint8Array(10)), simpleBlock(AUDIO),
      // A known-size Cluster too.
      el(ID.CLUSTER, el(ID.TIMESTAMP, uint(99)), simpleBlock(VIDEO, { bytes: 300 }))]);
    for (const size of [1, 3, file.length]) {
      const c = countIn(file, () => size);
      expect(c.videoFrames).toBe(1 + 1 + 2 + 3 + 1);
      expect(c.framesByTrack.get(AUDIO)).toBe(6);
    }
  });

  it('fails with a named error on a broken integer, an unskippable element or an overrun, and keeps failing', () => {
    const head = concat([ebmlHeader(), sized(ID.SEGMENT, null)]);
    const c = new WebmFrameCounter();
    expect(() => c.push(concat([head, new Uint8Array([0x00])]))).toThrow(WebmFormatError);
    expect(() => c.push(simpleBlock(VIDEO))).toThrow(
      new RegExp(`invalid EBML variable-length integer at byte ${head.length}`));
    expect(() => countIn(concat([head, sized(ID.TAGS, null)]))).toThrow(/unknown size and cannot be skipped/);
    expect(() => countIn(concat([head, sized(ID.CLUSTER, 4, simpleBlock(VIDEO))])))
      .toThrow(/runs past its parent's end/);
    const stub = el(ID.SIMPLE_BLOCK, new Uint8Array([0x81, 0]));
    expect(() => countIn(concat([head, tracks([[VIDEO, 1]]), clusterHead(0), stub])))
      .toThrow(/too short for its header/);
  });
});
