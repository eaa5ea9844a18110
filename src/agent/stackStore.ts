// The stack records of one region, accumulated across incremental reads. A READY stack
// record never changes, so each poll reads only the records from the previous snapshot's
// stacks.next on (readRegionAsync's sinceStack) and appends them here; a region with 100k
// stacks is copied out of the file once, not every second.
//
// The frames are held only until the process's symbol tables (pprof.ts) have turned them
// into location lists: pending() hands those records over, release() then frees their
// frames. Ids, depths and flags of every record stay (12 bytes a stack); the frames, 8
// bytes each and a dozen or more per stack, do not, so a big process's stacks are not
// kept twice.
//
// Storage is growable typed arrays (capacity doubles), so pending() returns subarrays
// without copying. A view stays valid after later appends and releases: appends write past
// its length, and a reallocation leaves the old buffers (and so the view) as they were.
import type { RegionStacks } from '../region.ts';

export class StackStore {
  private ids = new Uint32Array(64);
  private depths = new Uint32Array(64);
  private flags = new Uint32Array(64);
  /** per record from `released` on: start of its frames in `frames` */
  private frameStart = new Uint32Array(64);
  private frames = new BigUint64Array(256);
  private count = 0;
  private framesUsed = 0;
  /** records before this index have had their frames freed */
  private released = 0;
  /** record index by stack id, -1 where none */
  private byId = new Int32Array(64).fill(-1);
  /** pass as sinceStack on the next read */
  next = 0;

  get size(): number {
    return this.count;
  }

  /** Appends the records of one read (ids are new: sinceStack makes them so; a repeated id
   * is ignored) and remembers stacks.next. */
  append(s: RegionStacks): void {
    const n = s.ids.length;
    if (n > 0) {
      this.reserve(this.count + n, this.framesUsed + s.frames.length);
      for (let i = 0; i < n; i++) {
        const id = s.ids[i]!;
        if (id < this.byId.length && this.byId[id]! >= 0) continue;
        const depth = s.depths[i]!;
        const start = s.frameStart[i]!;
        const at = this.count++;
        this.ids[at] = id;
        this.depths[at] = depth;
        this.flags[at] = s.flags[i]!;
        this.frameStart[at] = this.framesUsed;
        this.frames.set(s.frames.subarray(start, start + depth), this.framesUsed);
        this.framesUsed += depth;
        this.index(id, at);
      }
    }
    if (s.next > this.next) this.next = s.next;
  }

  /** Whether a record for stack `id` was read. */
  has(id: number): boolean {
    return id < this.byId.length && this.byId[id]! >= 0;
  }

  /** Frames of stack `id`, innermost first; undefined when its record was not read or its
   * frames were released. */
  framesOf(id: number): BigUint64Array | undefined {
    const at = id < this.byId.length ? this.byId[id]! : -1;
    if (at < this.released) return undefined;
    const start = this.frameStart[at]!;
    return this.frames.subarray(start, start + this.depths[at]!);
  }

  /** The records whose frames are still held (from the first not released on), as a
   * RegionStacks (views, no copy); `first` is the index of its first record. */
  pending(): RegionStacks & { first: number } {
    const r = this.released;
    return {
      first: r,
      ids: this.ids.subarray(r, this.count),
      depths: this.depths.subarray(r, this.count),
      flags: this.flags.subarray(r, this.count),
      frameStart: this.frameStart.subarray(r, this.count),
      frames: this.frames.subarray(0, this.framesUsed),
      next: this.next,
    };
  }

  /** Frees the frames of the records before index `upTo` (their location lists are built);
   * the frames of later records move to the front of a smaller array. */
  release(upTo: number): void {
    upTo = Math.min(upTo, this.count);
    if (upTo <= this.released) return;
    const from = upTo < this.count ? this.frameStart[upTo]! : this.framesUsed;
    const keep = this.framesUsed - from;
    let cap = 256;
    while (cap < keep) cap *= 2;
    const b = new BigUint64Array(cap);
    b.set(this.frames.subarray(from, this.framesUsed));
    this.frames = b;
    this.framesUsed = keep;
    for (let i = upTo; i < this.count; i++) this.frameStart[i] = this.frameStart[i]! - from;
    this.released = upTo;
  }

  /** Bytes held, for the benchmark. */
  get bytes(): number {
    return this.ids.byteLength * 4 + this.frames.byteLength + this.byId.byteLength;
  }

  private index(id: number, at: number): void {
    if (id >= this.byId.length) {
      let cap = this.byId.length;
      while (cap <= id) cap *= 2;
      const grown = new Int32Array(cap).fill(-1);
      grown.set(this.byId);
      this.byId = grown;
    }
    this.byId[id] = at;
  }

  private reserve(records: number, frames: number): void {
    if (records > this.ids.length) {
      let cap = this.ids.length;
      while (cap < records) cap *= 2;
      const grow = (a: Uint32Array) => {
        const b = new Uint32Array(cap);
        b.set(a.subarray(0, this.count));
        return b;
      };
      this.ids = grow(this.ids);
      this.depths = grow(this.depths);
      this.flags = grow(this.flags);
      this.frameStart = grow(this.frameStart);
    }
    if (frames > this.frames.length) {
      let cap = this.frames.length;
      while (cap < frames) cap *= 2;
      const b = new BigUint64Array(cap);
      b.set(this.frames.subarray(0, this.framesUsed));
      this.frames = b;
    }
  }
}
