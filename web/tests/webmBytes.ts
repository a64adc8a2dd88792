/**
 * Builds small WebM files byte by byte for the frame-counter and recorder tests, written the way
 * MediaRecorder writes them: an unknown-size Segment and unknown-size Clusters of SimpleBlocks.
 */

export const ID = {
  EBML: 0x1a45dfa3, DOC_TYPE: 0x4282, SEGMENT: 0x18538067, TRACKS: 0x1654ae6b, TRACK_ENTRY: 0xae,
  TRACK_NUMBER: 0xd7, TRACK_TYPE: 0x83, CLUSTER: 0x1f43b675, TIMESTAMP: 0xe7, SIMPLE_BLOCK: 0xa3,
  BLOCK_GROUP: 0xa0, BLOCK: 0xa1, BLOCK_DURATION: 0x9b, CUES: 0x1c53bb6b, CUE_POINT: 0xbb, CUE_TIME: 0xb3,
  TAGS: 0x1254c367, VOID: 0xec,
} as const;

export function concat(parts: Uint8Array[]): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

function idBytes(id: number): Uint8Array {
  const out: number[] = [];
  for (let v = id; v > 0; v = Math.floor(v / 256)) out.unshift(v % 256);
  return new Uint8Array(out);
}

/** A size as an EBML integer of the shortest length (8 bytes for `null`: unknown size). */
function sizeBytes(size: number | null): Uint8Array {
  if (size === null) return new Uint8Array([0x01, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
  let length = 1;
  while (size >= 2 ** (7 * length) - 1) length++;
  const out = new Uint8Array(length);
  let v = size;
  for (let i = length - 1; i >= 0; i--) {
    out[i] = v % 256;
    v = Math.floor(v / 256);
  }
  out[0] |= 0x80 >> (length - 1);
  return out;
}

export function uint(v: number): Uint8Array {
  const out: number[] = [];
  do {
    out.unshift(v % 256);
    v = Math.floor(v / 256);
  } while (v > 0);
  return new Uint8Array(out);
}

/** An element whose size is its children's length. */
export function el(id: number, ...children: Uint8Array[]): Uint8Array {
  const payload = concat(children);
  return concat([idBytes(id), sizeBytes(payload.length), payload]);
}

/** An element with a stated size (`null`: unknown), whatever its children's length. */
export function sized(id: number, size: number | null, ...children: Uint8Array[]): Uint8Array {
  return concat([idBytes(id), sizeBytes(size), ...children]);
}

export function ebmlHeader(): Uint8Array {
  return el(ID.EBML, el(ID.DOC_TYPE, new TextEncoder().encode('webm')));
}

/** A Tracks element: [track number, track type (1 video, 2 audio)]. */
export function tracks(entries: [number, number][]): Uint8Array {
  return el(ID.TRACKS, ...entries.map(([n, t]) => el(ID.TRACK_ENTRY, el(ID.TRACK_NUMBER, uint(n)),
    el(ID.TRACK_TYPE, uint(t)))));
}

/** A block body: track, timestamp, flags (fixed-size lacing when `laced` frames), `bytes` of data. */
export function blockBody(track: number, opts: { laced?: number; bytes?: number; t?: number } = {}): Uint8Array {
  const t = opts.t ?? 0;
  const lacing = opts.laced ? [0x80 | 0x04, opts.laced - 1] : [0x80];
  const data = new Uint8Array(opts.bytes ?? 12).map((_, i) => (i * 31 + track) % 256);
  return concat([new Uint8Array([0x80 | track, (t >> 8) & 0xff, t & 0xff, ...lacing]), data]);
}

export function simpleBlock(track: number, opts: { laced?: number; bytes?: number; t?: number } = {}): Uint8Array {
  return el(ID.SIMPLE_BLOCK, blockBody(track, opts));
}

/** The start of a MediaRecorder-like file: EBML header, unknown-size Segment, one video track. */
export function recorderHead(track = 1): Uint8Array {
  return concat([ebmlHeader(), sized(ID.SEGMENT, null), tracks([[track, 1]])]);
}

/** An unknown-size Cluster header with its Timestamp, as MediaRecorder starts each cluster. */
export function clusterHead(timestampMs: number): Uint8Array {
  return concat([sized(ID.CLUSTER, null), el(ID.TIMESTAMP, uint(timestampMs))]);
}
