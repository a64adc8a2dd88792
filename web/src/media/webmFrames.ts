/**
 * Counts the video frames in a WebM byte stream as it arrives, chunk by chunk: the recorder's proof
 * that its output holds every frame it was handed. Only element headers and the first bytes of each
 * block are read; frame data is skipped, never kept.
 *
 * MediaRecorder writes the Segment and every Cluster with an unknown size (all size bits set): such
 * an element ends where the next element that cannot be its child begins (a Cluster ends at the
 * next Cluster or any other Segment child, the Segment at a new EBML header or Segment).
 */

const EBML = 0x1a45dfa3;
const SEGMENT = 0x18538067;
const CLUSTER = 0x1f43b675;
const TRACKS = 0x1654ae6b;
const TRACK_ENTRY = 0xae;
const TRACK_NUMBER = 0xd7;
const TRACK_TYPE = 0x83;
const SIMPLE_BLOCK = 0xa3;
const BLOCK_GROUP = 0xa0;
const BLOCK = 0xa1;
const VOID = 0xec;
const CRC32 = 0xbf;
const TRACK_TYPE_VIDEO = 1;

/**
 * The depth at which each element the reader knows lives (Segment 0, its children 1, Cluster and
 * Tracks children 2, BlockGroup and TrackEntry children 3): an unknown-size element at depth d
 * ends at the first known element of depth d or less. Unknown IDs count as children.
 */
const DEPTH = new Map<number, number>([
  [EBML, 0], [SEGMENT, 0],
  [0x114d9b74, 1], [0x1549a966, 1], [TRACKS, 1], [CLUSTER, 1], [0x1c53bb6b, 1], [0x1043a770, 1], [0x1254c367, 1],
  [0x1941a469, 1],
  // Cluster: Timestamp, SilentTracks, Position, PrevSize, SimpleBlock, BlockGroup, EncryptedBlock; Tracks: TrackEntry.
  [0xe7, 2], [0x5854, 2], [0xa7, 2], [0xab, 2], [SIMPLE_BLOCK, 2], [BLOCK_GROUP, 2], [0xaf, 2], [TRACK_ENTRY, 2],
  [BLOCK, 3], [TRACK_NUMBER, 3], [TRACK_TYPE, 3],
]);
/** The masters whose children are read; every other element is skipped by its size. */
const ENTERED = new Set([SEGMENT, CLUSTER, TRACKS, TRACK_ENTRY, BLOCK_GROUP]);

/** The bytes are not a WebM this reader can follow (a broken integer, an unskippable element). */
export class WebmFormatError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'WebmFormatError';
  }
}

interface Open {
  id: number;
  /** Absolute end offset, or null for an unknown size. */
  end: number | null;
  /** For a TrackEntry: what its children said. */
  trackNumber?: number;
  trackType?: number;
  /** For a BlockGroup: its Block, counted when the group (with any BlockAdditions) is complete. */
  block?: BlockHead;
}

interface BlockHead {
  track: number;
  frames: number;
  inGroup: boolean;
}

/** Whether `id` may appear directly inside an unknown-size element `parent` (EBML's end rule). */
function mayContain(parent: number, id: number): boolean {
  if (id === VOID || id === CRC32) return true;
  const d = DEPTH.get(id);
  return d === undefined || d > DEPTH.get(parent)!;
}

export class WebmFrameCounter {
  /** Bytes not yet consumed: at most an element header and the few payload bytes it needs. */
  private pending = new Uint8Array(0);
  /** Absolute offset of pending[0]. */
  private offset = 0;
  /** Bytes of the current element's payload still to skip. */
  private skip = 0;
  /** The block being skipped: counted once its last byte has arrived. */
  private partial: BlockHead | null = null;
  private readonly open: Open[] = [];
  private readonly videoTracks = new Set<number>();
  private readonly blocksByTrack = new Map<number, number>();
  private failure: WebmFormatError | null = null;

  /** Frames in the complete blocks of video tracks read so far (a laced block counts each of its frames). */
  get videoFrames(): number {
    let n = 0;
    for (const [track, count] of this.blocksByTrack) if (this.videoTracks.has(track)) n += count;
    return n;
  }

  /** Frames read so far per track number, video or not. */
  get framesByTrack(): ReadonlyMap<number, number> {
    return this.blocksByTrack;
  }

  /** Reads the next bytes of the stream; throws WebmFormatError (and keeps throwing) on bad input. */
  push(chunk: Uint8Array): void {
    if (this.failure) throw this.failure;
    if (this.skip > 0) {
      const n = Math.min(this.skip, chunk.length);
      this.skip -= n;
      this.offset += n;
      chunk = chunk.subarray(n);
      if (this.skip > 0) return;
      if (this.partial) this.complete(this.partial);
      this.partial = null;
    }
    let buf = chunk;
    if (this.pending.length) {
      buf = new Uint8Array(this.pending.length + chunk.length);
      buf.set(this.pending);
      buf.set(chunk, this.pending.length);
    }
    try {
      const used = this.read(buf);
      this.pending = buf.slice(used);
    } catch (e) {
      this.failure = e instanceof WebmFormatError ? e : new WebmFormatError(String(e));
      throw this.failure;
    }
  }

  /** Consumes whole elements (headers, needed heads, skips) from buf; returns the bytes used. */
  private read(buf: Uint8Array): number {
    let pos = 0;
    for (;;) {
      this.closeEnded(this.offset);
      const base = this.offset - pos;
      const id = readId(buf, pos, base);
      if (!id) return pos;
      const size = readSize(buf, pos + id.length, base);
      if (!size) return pos;
      const head = id.length + size.length;
      const start = this.offset;
      const payloadAt = start + head;
      this.closeUnknownFor(id.value);
      const parent = this.open[this.open.length - 1];
      if (parent?.end != null && size.value !== null && payloadAt + size.value > parent.end) {
        throw new WebmFormatError(`element 0x${id.value.toString(16)} at byte ${start} runs past its parent's end`);
      }
      if (ENTERED.has(id.value)) {
        this.open.push({ id: id.value, end: size.value === null ? null : payloadAt + size.value });
        pos += head;
        this.offset += head;
        continue;
      }
      if (size.value === null) {
        throw new WebmFormatError(`element 0x${id.value.toString(16)} at byte ${start} has an unknown size and ` +
          'cannot be skipped');
      }
      let block: BlockHead | null = null;
      if (id.value === SIMPLE_BLOCK || (id.value === BLOCK && parent?.id === BLOCK_GROUP)) {
        const read = readBlockHead(buf, pos + head, size.value, base);
        if (!read) return pos;
        block = { ...read, inGroup: id.value === BLOCK };
      } else if ((id.value === TRACK_NUMBER || id.value === TRACK_TYPE) && parent?.id === TRACK_ENTRY) {
        if (size.value > 8) throw new WebmFormatError(`a ${size.value}-byte track number or type at byte ${start}`);
        if (buf.length < pos + head + size.value) return pos;
        const v = readUint(buf, pos + head, size.value);
        if (id.value === TRACK_NUMBER) parent.trackNumber = v;
        else parent.trackType = v;
      }
      // Skip the payload, past the end of this chunk if need be.
      const avail = buf.length - (pos + head);
      const n = Math.min(avail, size.value);
      pos += head + n;
      this.offset += head + n;
      if (n < size.value) {
        this.skip = size.value - n;
        this.partial = block;
        return pos;
      }
      if (block) this.complete(block);
    }
  }

  /** A block's last byte has arrived: a SimpleBlock counts now, a Block when its BlockGroup ends. */
  private complete(block: BlockHead): void {
    if (block.inGroup) this.open[this.open.length - 1].block = block;
    else this.count(block);
  }

  private count(block: BlockHead): void {
    this.blocksByTrack.set(block.track, (this.blocksByTrack.get(block.track) ?? 0) + block.frames);
  }

  /** Closes the known-size elements that end at or before `at`. */
  private closeEnded(at: number): void {
    for (let top = this.open[this.open.length - 1]; top && top.end !== null && top.end <= at;
      top = this.open[this.open.length - 1]) {
      this.close();
    }
  }

  /** Closes the unknown-size elements that `id` cannot belong to. */
  private closeUnknownFor(id: number): void {
    for (let top = this.open[this.open.length - 1]; top && top.end === null && !mayContain(top.id, id);
      top = this.open[this.open.length - 1]) {
      this.close();
    }
  }

  private close(): void {
    const done = this.open.pop()!;
    if (done.id === TRACK_ENTRY && done.trackNumber !== undefined && done.trackType === TRACK_TYPE_VIDEO) {
      this.videoTracks.add(done.trackNumber);
    }
    if (done.block) this.count(done.block);
  }
}

interface Vint {
  /** The value; for a size, null when every value bit is set (unknown size). */
  value: number | null;
  length: number;
}

/** The length of the EBML integer starting with byte `first` (`at`: its absolute offset, for the message). */
function vintLength(first: number, at: number, max: number): number {
  if (first === 0) throw new WebmFormatError(`invalid EBML variable-length integer at byte ${at}`);
  const length = 8 - Math.floor(Math.log2(first));
  if (length > max) throw new WebmFormatError(`a ${length}-byte EBML integer at byte ${at} (at most ${max})`);
  return length;
}

/** An element ID (marker bits kept, as IDs are written), or null when buf ends first. */
function readId(buf: Uint8Array, pos: number, base: number): { value: number; length: number } | null {
  if (pos >= buf.length) return null;
  const length = vintLength(buf[pos], base + pos, 4);
  if (pos + length > buf.length) return null;
  let v = 0;
  for (let i = 0; i < length; i++) v = v * 256 + buf[pos + i];
  return { value: v, length };
}

/** An element size, null value for unknown; null when buf ends first. */
function readSize(buf: Uint8Array, pos: number, base: number): Vint | null {
  if (pos >= buf.length) return null;
  const length = vintLength(buf[pos], base + pos, 8);
  if (pos + length > buf.length) return null;
  let v = buf[pos] & ((1 << (8 - length)) - 1);
  let allOnes = v === (1 << (8 - length)) - 1;
  for (let i = 1; i < length; i++) {
    v = v * 256 + buf[pos + i];
    allOnes &&= buf[pos + i] === 0xff;
  }
  if (allOnes) return { value: null, length };
  if (!Number.isSafeInteger(v)) throw new WebmFormatError(`an element size of ${v} bytes at byte ${base + pos}`);
  return { value: v, length };
}

function readUint(buf: Uint8Array, pos: number, length: number): number {
  let v = 0;
  for (let i = 0; i < length; i++) v = v * 256 + buf[pos + i];
  return v;
}

/** A block's track and frame count (laced blocks hold several), or null when buf ends first. */
function readBlockHead(buf: Uint8Array, pos: number, size: number,
  base: number): { track: number; frames: number } | null {
  if (size === 0) return bad(base + pos);
  if (pos >= buf.length) return null;
  const trackLength = vintLength(buf[pos], base + pos, 8);
  const flagsAt = pos + trackLength + 2;
  if (flagsAt + 1 > pos + size) return bad(base + pos);
  if (flagsAt + 1 > buf.length) return null;
  let track = buf[pos] & ((1 << (8 - trackLength)) - 1);
  for (let i = 1; i < trackLength; i++) track = track * 256 + buf[pos + i];
  const lacing = (buf[flagsAt] >> 1) & 3;
  if (lacing === 0) return { track, frames: 1 };
  if (flagsAt + 2 > pos + size) return bad(base + pos);
  if (flagsAt + 2 > buf.length) return null;
  return { track, frames: buf[flagsAt + 1] + 1 };
}

function bad(pos: number): never {
  throw new WebmFormatError(`a block at byte ${pos} is too short for its header`);
}
