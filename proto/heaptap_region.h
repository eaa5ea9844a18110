/* SPDX-License-Identifier: Apache-2.0 */
/*
 * heaptap region layout, version 1.
 *
 * One region file per profiled process, $HEAPTAP_DIR/<pid>-<unique>.heaptap. The preload
 * (libheaptap.so, C11) writes it; the sidecar's addon (C++17) maps it read-only. This header
 * is the single definition both include. It uses only fixed-width types; every shared word
 * is accessed with the __atomic builtins (same spelling in C and C++), never as _Atomic.
 *
 * File layout (every section starts on a 4096-byte boundary; offsets are from byte 0):
 *
 *   [ struct ht_header                      ]  offset 0 (at most 4096 bytes)
 *   [ struct ht_control                     ]  offset HT_CONTROL_OFFSET (written by the sidecar)
 *   [ module table:  ht_module[n]           ]  hdr.modules
 *   [ module paths:  char[]                 ]  hdr.paths        (NUL-terminated strings)
 *   [ stack index:   uint32_t[n] (ids)      ]  hdr.stack_index  (open addressing, 0 = empty)
 *   [ stack records: ht_stack[n]            ]  hdr.stacks       (indexed by stack id)
 *   [ frame pool:    uint64_t[n]            ]  hdr.frames
 *   [ shared table:  ht_counters[n]         ]  hdr.shared       (indexed by stack id)
 *   [ slabs:         n x slab_bytes         ]  hdr.slabs        (one per live thread)
 *   [ timeline:      ht_timeline_point[n]   ]  hdr.timeline     (HT_FEATURE_TIMELINE)
 *   [ shared peaks:  ht_peak[n]             ]  hdr.shared_peak  (HT_FEATURE_PEAK)
 *
 * The file is sparse: the preload reserves backing store (fallocate) for a part before it
 * first writes it, so a full tmpfs turns into a drop counter, never into SIGBUS.
 *
 * ---------------------------------------------------------------------------------------
 * Writer rules (the preload)
 * - Counters only grow. Nothing is ever reset, so a reader that starts late loses nothing.
 * - A thread writes only its own slab, with relaxed atomic stores of aligned 64-bit words
 *   (plain moves on x86-64 and arm64: no torn reads, no read-modify-write on the fast path).
 * - The shared table, the stack table and the frame pool are written by any thread with
 *   atomic read-modify-write (rare: slab full, no slab, slab fold, new stack).
 *
 * Reader protocol (the addon), for a consistent snapshot:
 *   1. s1 = load_acquire(hdr.seq); if s1 is odd a slab fold is under way: retry.
 *   2. For every slab below hdr.slabs_used whose state is ACTIVE or RETIRED, every entry:
 *        id = load_acquire(entry.stack_id); if id != 0, add the entry's counters (relaxed
 *        loads) to stack id's totals.
 *   3. Add every shared-table row below stacks_used (relaxed loads) to the same totals;
 *      rows at or past stacks_used are never written (and may not be backed by storage).
 *   4. atomic_thread_fence(acquire); s2 = load_relaxed(hdr.seq); if s2 != s1: retry.
 *   Retry a bounded number of times, then report the region as busy.
 * Each counter only grows, so a snapshot that sees one a little early or late is still
 * right within one poll. In-use (alloc - free) of a stack can be transiently negative when
 * the allocating and the freeing thread's slabs are read at different moments: clamp at 0.
 *
 * Stack records become valid when their flags word has HT_STACK_READY (load_acquire); after
 * that only HT_STACK_DUPLICATE may be added (a record that lost the race to an equal stack;
 * it never gets counts). Modules become valid when their state word is non-zero
 * (load_acquire); afterwards only state (LOADED -> UNLOADED) and unload_ns change. The path
 * pool is bounded by paths.bytes.
 *
 * Slab fold (writer, one at a time): seq = seq + 1 (relaxed, now odd); release fence; add
 * the slab's counts to the shared table and clear it; seq = seq + 2 (release, even).
 * A writer killed in the middle leaves seq odd for good: a reader then reports the region
 * busy, and dead (flock) — its counts up to the fold are lost to readers.
 *
 * Liveness: the preload holds a shared flock() on the region file through an O_CLOEXEC
 * descriptor for the life of the process image, taken before the file appears under its
 * final name. A reader that gets LOCK_EX|LOCK_NB knows
 * the writer is gone (exit, kill -9, or exec into a new image), whatever hdr.state says and
 * even if the pid has been reused.
 *
 * Everything is little-endian native (the region never leaves the machine).
 */
#ifndef HEAPTAP_REGION_H
#define HEAPTAP_REGION_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define HT_MAGIC            0x0050415450414548ull /* "HEAPTAP\0" as bytes */
#define HT_LAYOUT_VERSION   1u
#define HT_HEADER_BYTES     8192u                 /* header page + control page */
#define HT_CONTROL_OFFSET   4096u                 /* struct ht_control, its own page */
#define HT_SECTION_ALIGN    4096u
#define HT_REGION_SUFFIX    ".heaptap"

/* Objects are counted in fixed point: an estimate of 1/p objects is stored as
 * round(HT_OBJ_ONE / p). At rate 1 every allocation adds exactly HT_OBJ_ONE. */
#define HT_OBJ_SHIFT        16u
#define HT_OBJ_ONE          (1ull << HT_OBJ_SHIFT)

/* Reserved stack ids. Real stacks are numbered from HT_STACK_FIRST. */
#define HT_STACK_NONE       0u  /* empty index slot / empty slab entry */
#define HT_STACK_OVERFLOW   1u  /* synthetic: the stack table or frame pool was full */
#define HT_STACK_FIRST      2u

/* hdr.state */
#define HT_STATE_INIT       0u  /* being set up; nothing else is valid yet */
#define HT_STATE_RUNNING    1u
#define HT_STATE_EXITED     2u  /* normal exit (exit() or return from main); exit_ns set */

/* hdr.unwinder */
#define HT_UNWIND_DWARF     1u  /* .eh_frame CFI: correct without frame pointers */
#define HT_UNWIND_FP        2u  /* frame-pointer chain: faster, needs -fno-omit-frame-pointer */

/* hdr.flags */
#define HT_FLAG_EXACT       (1u << 0) /* sample_rate was 1 at start: every allocation recorded */
#define HT_FLAG_FORK_CHILD  (1u << 1) /* made by a fork()ed child of a profiled process */

/* Why something was not recorded as it would have been: hdr.drops[reason]. Each says
 * whether bytes were lost; none of them loses allocation totals. */
#define HT_DROP_STACKS_FULL     0  /* stack table full: counted under HT_STACK_OVERFLOW */
#define HT_DROP_FRAMES_FULL     1  /* frame pool full: counted under HT_STACK_OVERFLOW */
#define HT_DROP_SLAB_FULL       2  /* thread's slab full: counted in the shared table (exact) */
#define HT_DROP_NO_SLAB         3  /* no slab free: counted in the shared table (exact) */
#define HT_DROP_LIVE_FULL       4  /* live table full: this allocation's free will be missed */
#define HT_DROP_RECURSION       5  /* sample point hit inside heaptap: interval redrawn */
#define HT_DROP_TRUNCATED       6  /* stack cut at max_depth or where the unwinder stopped */
#define HT_DROP_BOOTSTRAP       7  /* allocations served before the allocator was resolved */
#define HT_DROP_MODULES_FULL    8  /* module table or path pool full: frames unattributed */
#define HT_DROP_RESERVE_FAILED  9  /* fallocate failed (full tmpfs): as the matching _FULL */
#define HT_DROP_PAUSED         10  /* sample points skipped while the sidecar paused us */
/* A sample point reached while what recording needs was held by another thread (the region
 * being made, space being reserved, a slab fold) or every sampling stack was in use: the
 * allocation is not sampled and the interval is redrawn. heaptap never waits inside an
 * allocation. Counts drops of a process before its region existed, too. */
#define HT_DROP_BUSY           11
#define HT_DROP_COUNT          12
#define HT_DROP_SLOTS          16

/* The sidecar's control area. The preload reads it (relaxed) whenever a thread reaches a
 * sample point and acknowledges in hdr.rate_now / hdr.paused_now. */
struct ht_control {
	uint32_t paused;        /* 1: take no new samples (frees of live samples still count) */
	uint32_t reserved0;
	uint64_t rate;          /* 0: keep the current rate; else the new mean interval in bytes */
	uint64_t seq;           /* bumped by the sidecar after each change (informational) */
	uint64_t reserved[5];
};

struct ht_section {
	uint64_t offset;        /* from the start of the file; HT_SECTION_ALIGN aligned */
	uint64_t bytes;         /* length of the section */
	uint32_t capacity;      /* number of entries */
	uint32_t entry_bytes;   /* size of one entry (slabs: bytes of one whole slab) */
};

struct ht_header {
	/* identity of the layout: checked first by every reader */
	uint64_t magic;              /* HT_MAGIC */
	uint32_t version;            /* HT_LAYOUT_VERSION */
	uint32_t header_bytes;       /* HT_HEADER_BYTES: the first section starts here */
	uint64_t file_bytes;         /* total file size; every section lies inside it */
	uint32_t flags;              /* HT_FLAG_* */
	uint32_t arch;               /* ELF e_machine of the writer (62 = x86-64, 183 = arm64) */

	/* tables */
	struct ht_section modules;     /* struct ht_module */
	struct ht_section paths;       /* entry_bytes 1 */
	struct ht_section stack_index; /* uint32_t stack ids, capacity a power of two */
	struct ht_section stacks;      /* struct ht_stack, by stack id */
	struct ht_section frames;      /* uint64_t return addresses */
	struct ht_section shared;      /* struct ht_counters, by stack id */
	struct ht_section slabs;       /* entry_bytes = bytes of one slab */
	uint32_t slab_entries;         /* entries per slab, a power of two */
	uint32_t max_depth;            /* frames kept per stack */

	/* the process (written once, before state becomes RUNNING) */
	int32_t  pid;
	int32_t  ppid;
	uint64_t start_ns;           /* CLOCK_REALTIME when the region was made */
	uint64_t proc_start_ticks;   /* field 22 of /proc/self/stat: with pid, unique on a boot */
	uint64_t sample_rate;        /* mean interval in bytes at start (1 = exact) */
	uint64_t seed;               /* RNG seed in use (HEAPTAP_SEED, or derived) */
	uint32_t unwinder;           /* HT_UNWIND_* */
	uint32_t reserved0;
	char     exe[512];           /* readlink(/proc/self/exe), NUL-terminated, truncated */
	char     cmdline[512];       /* argv joined with spaces, NUL-terminated, truncated */
	char     service[128];       /* HEAPTAP_SERVICE_NAME, else OTEL_SERVICE_NAME, else exe base */

	/* live state (written by the preload while it runs) */
	uint32_t state;              /* HT_STATE_*; RUNNING is stored with release after setup */
	uint32_t paused_now;         /* acknowledges control.paused */
	uint64_t exit_ns;            /* CLOCK_REALTIME of normal exit, 0 before */
	uint64_t heartbeat_ns;       /* CLOCK_REALTIME of the latest sample (coarse) */
	uint64_t rate_now;           /* current mean interval in bytes (acknowledges control.rate) */
	uint64_t seq;                /* slab-fold sequence: odd while a fold is under way */
	uint32_t stacks_used;        /* next stack id to hand out (ids < this may be READY) */
	uint32_t modules_used;       /* module entries handed out */
	uint64_t frames_used;        /* frame-pool entries handed out */
	uint64_t paths_used;         /* path-pool bytes handed out */
	uint64_t threads_seen;       /* threads that took a sample */
	uint64_t slab_folds;         /* retired slabs folded into the shared table for reuse */
	uint64_t drops[HT_DROP_SLOTS];  /* HT_DROP_*: events, not bytes (see above) */
	uint32_t slabs_used;         /* slabs [0, slabs_used) have ever been taken; others unbacked */
	uint32_t features;           /* HT_FEATURE_*: what this writer keeps beyond layout 1.0;
				      * 0 in regions of writers from before features existed */
	/* The heap over time, kept by the writer at sampled events (HT_FEATURE_PEAK): the only
	 * events that change the sampled heap, so the peak is the real high-water mark of the
	 * estimate (exact at rate 1), not the largest of a reader's polls. */
	int64_t  inuse_bytes;        /* estimated bytes in use now (sampled allocs - frees) */
	uint64_t alloc_bytes;        /* estimated bytes allocated, cumulative */
	uint64_t peak_bytes;         /* highest inuse_bytes reached */
	uint64_t peak_ns;            /* CLOCK_REALTIME when it was reached */
	uint64_t peak_gen;           /* bumped at every new peak; see struct ht_peak */
	struct ht_section timeline;  /* struct ht_timeline_point ring (HT_FEATURE_TIMELINE) */
	uint64_t timeline_next;      /* points written so far; point n is at n % capacity */
	struct ht_section shared_peak; /* struct ht_peak by stack id, for the shared table */
	uint64_t reserved1[3];
};

/* hdr.features. A reader checks a bit before it reads what the bit covers; a region from a
 * writer without it has zeros there. Growing the layout: new fields go into reserved space
 * (or new sections past the known ones) behind a new bit, so older readers still read what
 * they know; a change older readers would misread bumps HT_LAYOUT_VERSION instead. */
#define HT_FEATURE_PEAK      (1u << 0) /* inuse/alloc/peak fields; each slab's entries are
					* followed by a struct ht_peak per entry (slab entry_bytes
					* grows by that), and hdr.shared_peak holds the shared
					* table's */
#define HT_FEATURE_TIMELINE  (1u << 1) /* hdr.timeline ring */

/* The per-stack in-use at the moment of the peak, kept lazily (memray's method): a counter
 * row's in-use at the latest peak is, if its gen equals hdr.peak_gen, (bytes, objects)
 * here; otherwise the row has not changed since that peak and its in-use now is its in-use
 * then. The writer brings a row up to date at the row's next event, before applying it:
 * bytes and objects first, then gen (release). So each sampled event costs a compare, and
 * no table is ever copied. Summed over rows this is exact for a single-threaded program;
 * events of other threads at the very moment of a new peak may fall on either side. */
struct ht_peak {
	uint64_t gen;            /* hdr.peak_gen when bytes/objects were taken; store_release.
				  * Bit 63 set: a shared row held by a writer for a moment (read
				  * it as not equal: take the row's current value) */
	int64_t  bytes;          /* the row's alloc_bytes - free_bytes at that peak */
	int64_t  objects;        /* the same in fixed-point objects */
};

/* A point of the timeline, written at most every few milliseconds at a sampled event (and
 * at exit). A reader takes a point whose ns is non-zero and reads the same before and
 * after its other fields (the writer stores ns = 0 first, ns last with release). */
struct ht_timeline_point {
	uint64_t ns;             /* CLOCK_REALTIME */
	int64_t  inuse_bytes;    /* hdr.inuse_bytes then */
	uint64_t alloc_bytes;    /* hdr.alloc_bytes then */
	uint64_t rss_bytes;      /* resident memory of the process (/proc/self/statm) then */
};

/* A loaded object: one entry per executable PT_LOAD segment, as /proc/<pid>/maps shows it. */
#define HT_MODULE_EMPTY     0u
#define HT_MODULE_LOADED    1u
#define HT_MODULE_UNLOADED  2u  /* dlclose()d: kept, since recorded stacks may point into it */

#define HT_MODULE_MAIN      (1u << 0) /* the main executable */
#define HT_MODULE_VDSO      (1u << 1) /* the kernel's vDSO: no file */
#define HT_MODULE_SELF      (1u << 2) /* libheaptap.so itself */

struct ht_module {
	uint32_t state;          /* HT_MODULE_*; store_release after all fields are written */
	uint32_t flags;          /* HT_MODULE_MAIN ... */
	uint32_t path_off;       /* into the path pool; path_len bytes then a NUL */
	uint32_t path_len;
	uint64_t load_bias;      /* l_addr: runtime address = ELF virtual address + load_bias */
	uint64_t start;          /* executable mapping [start, limit), page aligned */
	uint64_t limit;
	uint64_t file_offset;    /* file offset of start, page aligned */
	uint64_t load_ns;        /* CLOCK_REALTIME when first seen */
	uint64_t unload_ns;      /* CLOCK_REALTIME when seen gone, 0 while loaded */
	uint32_t build_id_len;   /* 0: none */
	uint32_t scan_mark;      /* the writer's bookkeeping; readers ignore it */
	uint8_t  build_id[32];   /* NT_GNU_BUILD_ID descriptor bytes (first 32) */
};

/* Stack record, by stack id. The frames are return addresses, innermost first, starting
 * with the caller of the allocation function; heaptap's own frames are never recorded.
 * Writer: fills hash, frame_off and depth, then store_release(flags, READY | ...), then
 * publishes the id in the index with a CAS. A record that loses the index race to an equal
 * stack keeps DUPLICATE and never gets counts. */
#define HT_STACK_READY      (1u << 0)
#define HT_STACK_TRUNCATED  (1u << 1) /* deeper than max_depth, or the unwinder stopped early */
#define HT_STACK_DUPLICATE  (1u << 2)
#define HT_STACK_SYNTHETIC  (1u << 3) /* no frames: HT_STACK_OVERFLOW */

struct ht_stack {
	uint64_t hash;           /* hash of the frames, never 0 */
	uint64_t frame_off;      /* index of the first frame in the frame pool */
	uint32_t depth;          /* number of frames */
	uint32_t flags;          /* HT_STACK_*; READY published with release */
};

/* Cumulative counters for one stack. Only ever increase. */
struct ht_counters {
	uint64_t alloc_objects;  /* fixed point, HT_OBJ_ONE per object */
	uint64_t alloc_bytes;    /* estimated bytes allocated */
	uint64_t free_objects;   /* fixed point */
	uint64_t free_bytes;     /* estimated bytes freed */
	uint64_t samples;        /* raw count of sampled allocations */
};

/* A thread's slab: header, then slab_entries entries used as an open-addressed table keyed
 * by stack id (linear probing from ht_slab_slot(id)). Only its owner writes it. A new entry
 * is made visible by store_release(stack_id) after its first counts are written. */
#define HT_SLAB_FREE        0u
#define HT_SLAB_ACTIVE      1u  /* owned by a live thread */
#define HT_SLAB_RETIRED     2u  /* its thread exited; counts still valid, may be folded */
#define HT_SLAB_FOLDING     3u  /* being folded into the shared table (hdr.seq is odd) */

struct ht_slab_header {
	uint32_t state;          /* HT_SLAB_*; changed with CAS */
	uint32_t tid;            /* owner's kernel thread id while ACTIVE */
	uint32_t used;           /* entries in use */
	uint32_t reuse;          /* times this slab was folded and reused */
	uint64_t acquired_ns;
	uint64_t reserved[5];
};

struct ht_slab_entry {
	uint32_t stack_id;       /* HT_STACK_NONE = empty; store_release after the first counts */
	uint32_t reserved;
	struct ht_counters c;
};

/* Index of the slab entry probe start for stack id (both sides use it). */
static inline uint32_t ht_slab_slot(uint32_t stack_id, uint32_t slab_entries)
{
	return (uint32_t)((stack_id * 0x9E3779B1u) >> 7) & (slab_entries - 1u);
}

#ifdef __cplusplus
}
#define HT_STATIC_ASSERT static_assert
#else
#define HT_STATIC_ASSERT _Static_assert
#endif

HT_STATIC_ASSERT(sizeof(struct ht_header) <= HT_CONTROL_OFFSET, "header fits its page");
HT_STATIC_ASSERT(sizeof(struct ht_control) == 64, "control size");
HT_STATIC_ASSERT(sizeof(struct ht_module) == 104, "module size");
HT_STATIC_ASSERT(sizeof(struct ht_stack) == 24, "stack size");
HT_STATIC_ASSERT(sizeof(struct ht_counters) == 40, "counters size");
HT_STATIC_ASSERT(sizeof(struct ht_slab_header) == 64, "slab header size");
HT_STATIC_ASSERT(sizeof(struct ht_slab_entry) == 48, "slab entry size");
HT_STATIC_ASSERT(sizeof(struct ht_peak) == 24, "peak size");
HT_STATIC_ASSERT(sizeof(struct ht_timeline_point) == 32, "timeline point size");

#endif /* HEAPTAP_REGION_H */
