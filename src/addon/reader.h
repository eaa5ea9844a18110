/* SPDX-License-Identifier: Apache-2.0 */
/*
 * heaptap region reader: a validated, read-only view of one region file and a consistent
 * snapshot of it. Pure C11 (plus POSIX), no Node, no policy: the addon (addon.cc) and C
 * tests call it directly.
 *
 * Trust model. A region is input from another container: every offset, length, capacity
 * and index in it is hostile until checked. htr_open() validates the header geometry once,
 * on a private copy; everything afterwards uses that copy for geometry, so a writer that
 * rewrites the header later cannot move a section under us. Live words (seq, stacks_used,
 * stack ids, ...) are loaded atomically from the mapping when they are used, and each is
 * checked against the validated geometry before it indexes anything. A bad value becomes
 * either an error (the header is unusable) or a skipped item counted in `malformed` (one
 * stack record, module or counter row is unusable). Loops are bounded by the validated
 * capacities, retries by HTR_MAX_ATTEMPTS, memory by the validated file size.
 *
 * A file that changes size while it is read. The writer (or anyone with write access to
 * the directory) can truncate the file after we mapped it; an access past the new end then
 * raises SIGBUS. Every access to a mapping runs under a guard (a SIGBUS handler installed
 * once, chained to any handler that was there before, and a per-thread sigsetjmp): a fault
 * inside the mapping being read ends that read with HTR_E_CHANGED and frees what it had
 * allocated; a SIGBUS anywhere else goes to the previous handler (or kills, as before).
 *
 * A sparse file. Every page the reader touches through the mapping is first found to hold
 * data (SEEK_DATA/SEEK_HOLE, once per snapshot): a hole reads as zeros, so skipping it is
 * exact, and on tmpfs a read fault on a hole would allocate a page (and on a full tmpfs
 * raise SIGBUS). So a file that claims 20 million stacks on holes costs what its data
 * costs, and the bytes of data themselves are capped: a region whose allocated blocks
 * (st_blocks) exceed htr_max_data_bytes() is refused (HTR_E_LIMIT). What a snapshot
 * allocates is then bounded by a small multiple of that data (about 3x at most: per-stack
 * sums, records, frames), and the pages it maps are the file's own.
 *
 * Threading: an htr_region may be read by one thread at a time; distinct htr_regions are
 * independent. All functions are reentrant.
 */
#ifndef HEAPTAP_READER_H
#define HEAPTAP_READER_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "heaptap_region.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Limits the reader imposes on top of the layout. */
#define HTR_MAX_FILE_BYTES   (4ull << 30) /* larger files are rejected outright */
#define HTR_MAX_DEPTH        1024u        /* hdr.max_depth above this is rejected */
#define HTR_MAX_ATTEMPTS     200u         /* snapshot attempts before "region busy" */
#define HTR_BUILD_ID_MAX     32u
#define HTR_PEAK_ATTEMPTS    8u           /* passes that may see the peak move before one
					   * is accepted unsettled (struct htr_peak) */
/* Bytes of data (allocated blocks) a region may hold before it is refused: 1 GiB, or
 * HEAPTAP_MAX_REGION_BYTES from the environment (read once; at least 1 MiB). A region of
 * the library's default sizes is 57 MiB apparent, so it holds at most that. */
#define HTR_MAX_DATA_BYTES   (1ull << 30)

/* What kind of failure an htr_error describes (the addon maps these to error codes). */
enum htr_error_kind {
	HTR_OK = 0,
	HTR_E_IO,        /* a system call failed; err.errnum is set */
	HTR_E_FORMAT,    /* not a region, or a region whose header is inconsistent */
	HTR_E_VERSION,   /* a heaptap region of a layout version this reader does not know */
	HTR_E_NOT_READY, /* hdr.state is still INIT: the writer is setting it up */
	HTR_E_BUSY,      /* hdr.seq stayed odd or kept changing for HTR_MAX_ATTEMPTS attempts */
	HTR_E_NOMEM,
	HTR_E_ARG,       /* the caller passed something invalid */
	HTR_E_CHANGED,   /* the file shrank while it was read (a fault in the mapping was caught) */
	HTR_E_LIMIT      /* the file holds more data than htr_max_data_bytes() */
};

struct htr_error {
	int kind;        /* enum htr_error_kind */
	int errnum;      /* errno for HTR_E_IO, else 0 */
	/* For HTR_E_NOT_READY and HTR_E_BUSY from htr_open/htr_read_path: 1 if a writer
	 * holds the region's lock, 0 if none does (it died while setting up or mid-fold, and
	 * the region will stay this way), -1 if unknown. */
	int alive;
	char msg[320];   /* what is wrong, without the file path (the caller adds it) */
};

/* An open, validated region. Fields are read-only for callers. */
struct htr_region {
	int fd;                        /* O_RDONLY, kept open while mapped */
	const unsigned char *map;      /* PROT_READ, MAP_SHARED, map_bytes long */
	uint64_t map_bytes;            /* = st_size at open; >= hdr.file_bytes */
	dev_t dev;                     /* identity of the file, to match a second descriptor */
	ino_t ino;
	/* Private copy of the header taken after state was seen != INIT (acquire). Its
	 * geometry (sections, slab_entries, max_depth) and identity fields are validated and
	 * never change; its live fields are only as of htr_open(): use htr_read_live(). */
	struct ht_header hdr;
};

/* Live header words and the control area, loaded atomically at one moment. */
struct htr_live {
	uint32_t state;
	uint32_t paused_now;
	uint64_t exit_ns;
	uint64_t heartbeat_ns;
	uint64_t rate_now;
	uint64_t seq;
	uint32_t stacks_used;          /* raw, as the writer stored it (not clamped) */
	uint32_t modules_used;
	uint64_t frames_used;
	uint64_t paths_used;
	uint64_t threads_seen;
	uint64_t slab_folds;
	uint64_t drops[HT_DROP_SLOTS];
	/* HT_FEATURE_PEAK (0 when the region's writer lacks it): the process-wide estimate */
	int64_t inuse_bytes;           /* sampled allocations - frees now (may be < 0 briefly) */
	uint64_t alloc_bytes;          /* cumulative */
	/* HT_FEATURE_TIMELINE (0 without it): points the writer has claimed so far */
	uint64_t timeline_next;
	uint32_t control_paused;       /* struct ht_control, as the sidecar last wrote it */
	uint64_t control_rate;
	uint64_t control_seq;
};

/* Counters summed per stack over slabs (ACTIVE, RETIRED) and the shared table. Only stacks
 * with a non-zero counter are listed, in increasing id order. Every listed id has a READY,
 * non-DUPLICATE stack record with id < stacks_used as loaded after the sums were taken, so
 * a caller that read stacks up to the same snapshot's next_stack knows every id here.
 *
 * In use, the one rule every consumer uses: a stack's in-use is its alloc - free summed over
 * its rows, clamped at 0 (a stack's rows in different slabs are read at slightly different
 * moments, so the difference can be transiently negative). A process's in-use is the sum of
 * its stacks' in-use (htr_snapshot.inuse_bytes), never sum(alloc) - sum(free).
 *
 * In use at the peak (HT_FEATURE_PEAK; zeros without it): per row, its struct ht_peak values
 * if the row's gen equals the snapshot's peak.gen, else the row's alloc - free as read in
 * this snapshot (the row has not changed since the peak); summed per stack, clamped at 0. */
struct htr_counters {
	uint32_t count;
	uint32_t *ids;
	uint64_t *alloc_objects;       /* fixed point, HT_OBJ_ONE per object; raw */
	uint64_t *alloc_bytes;
	uint64_t *free_objects;        /* fixed point */
	uint64_t *free_bytes;
	uint64_t *samples;
	uint64_t *inuse_objects;       /* alloc - free, clamped at 0 (fixed point) */
	uint64_t *inuse_bytes;
	uint64_t *peak_objects;        /* in use at the peak, clamped at 0 (fixed point) */
	uint64_t *peak_bytes;
};

/* The high-water mark (HT_FEATURE_PEAK), read in the same pass as the per-stack values at
 * the peak: gen before and after the pass were equal, unless `settled` is 0 (the peak kept
 * moving for HTR_PEAK_ATTEMPTS passes; the values are then those of the gen read first,
 * with rows changed since a newer peak counted as they are now). */
struct htr_peak {
	uint64_t gen;                  /* hdr.peak_gen; 0: no peak yet */
	uint64_t bytes;                /* hdr.peak_bytes */
	uint64_t ns;                   /* hdr.peak_ns (CLOCK_REALTIME) */
	uint32_t settled;
};

/* Timeline points (HT_FEATURE_TIMELINE) with index >= since, in index order, each read
 * whole (ns non-zero and the same before and after its fields) and no older than the point
 * before it. Point n lies in slot n % capacity; only the last `capacity` points exist. */
struct htr_timeline {
	uint32_t count;
	uint64_t *index;               /* n of each point */
	uint64_t *ns;
	int64_t *inuse_bytes;
	uint64_t *alloc_bytes;
	uint64_t *rss_bytes;
	/* The index to pass as `since` next time: the first point in the ring's window that was
	 * not readable (being written, or never written), else timeline_next. Points past it
	 * are returned again next time (they do not change until the ring wraps onto them). */
	uint64_t next;
};

/* Stack records with id in [since, next_stack) that are READY and not DUPLICATE. Frames of
 * record i are frames[frame_start[i] .. frame_start[i] + depths[i]). */
struct htr_stacks {
	uint32_t count;
	uint32_t *ids;
	uint32_t *depths;
	uint32_t *flags;
	uint32_t *frame_start;
	uint64_t nframes;
	uint64_t *frames;
	/* The id to pass as `since` next time: the lowest id >= since whose record was not yet
	 * READY (a writer is filling it), or stacks_used (clamped) if all were. Records past a
	 * gap are returned again next time; they never change once READY, so that is harmless. */
	uint32_t next_stack;
};

struct htr_module {
	uint32_t index;                /* entry number in the module table */
	uint32_t state;                /* HT_MODULE_LOADED or HT_MODULE_UNLOADED */
	uint32_t flags;                /* HT_MODULE_* */
	uint32_t path_off;             /* into the region's path pool */
	uint32_t path_len;
	const char *path;              /* NUL-terminated, points into htr_snapshot.strings */
	uint64_t load_bias;
	uint64_t start;
	uint64_t limit;
	uint64_t file_offset;
	uint64_t load_ns;
	uint64_t unload_ns;
	uint32_t build_id_len;         /* <= HTR_BUILD_ID_MAX */
	uint8_t build_id[HTR_BUILD_ID_MAX];
};

/* One consistent reading of a region. Free with htr_snapshot_free(). */
struct htr_snapshot {
	struct ht_header hdr;          /* the validated copy from htr_open() */
	struct htr_live live;          /* loaded after counters and stacks */
	int alive;                     /* 1: a writer holds its flock (see htr_alive) */
	struct htr_counters counters;
	struct htr_peak peak;          /* zeros without HT_FEATURE_PEAK */
	uint64_t inuse_bytes;          /* sum of counters.inuse_bytes (saturating) */
	uint64_t inuse_objects;
	uint64_t peak_stack_bytes;     /* sum of counters.peak_bytes: the peak profile's total */
	struct htr_timeline timeline;  /* empty without HT_FEATURE_TIMELINE */
	struct htr_stacks stacks;
	uint32_t module_count;
	struct htr_module *modules;
	char *strings;                 /* module paths */
	uint32_t retries;              /* snapshot attempts that had to be redone (a fold, or
					* the peak moving: at most HTR_PEAK_ATTEMPTS of those) */
	uint64_t malformed;            /* records, rows or entries skipped as inconsistent */
	char first_malformed[160];     /* what the first of them was, "" if none */
};

/* Header strings copied out of their fixed-size fields, NUL forced. */
struct htr_strings {
	char exe[sizeof(((struct ht_header *)0)->exe)];
	char cmdline[sizeof(((struct ht_header *)0)->cmdline)];
	char service[sizeof(((struct ht_header *)0)->service)];
};

/* Opens and validates path. On failure returns -1, fills err, and leaves r closed (fd -1,
 * map NULL), so htr_close() on it is harmless. */
int htr_open(struct htr_region *r, const char *path, struct htr_error *err);
void htr_close(struct htr_region *r);

/* Loads the live header words and the control area. */
void htr_read_live(const struct htr_region *r, struct htr_live *out);

/* Copies exe, cmdline and service out of the validated header copy. */
void htr_header_strings(const struct ht_header *h, struct htr_strings *out);

/* Liveness of the writer: opens path again (a separate open file description, so the test
 * works even inside the writer's own process), checks that it is the same file as r, and
 * tries flock(LOCK_EX|LOCK_NB). Failing with EWOULDBLOCK means a writer holds its shared
 * lock: *alive = 1. Succeeding means no writer is left: unlock at once, *alive = 0. */
int htr_alive(const struct htr_region *r, const char *path, int *alive, struct htr_error *err);

/* Takes a consistent snapshot following the reader protocol of heaptap_region.h: counters
 * and the values at the peak first (retried while hdr.seq is odd or changes), then stack
 * records from `since`, then timeline points from `since_point`, then modules, then the
 * live header. The result owns its memory. */
int htr_snapshot_take(const struct htr_region *r, uint32_t since, struct htr_snapshot *out,
		 struct htr_error *err);
int htr_snapshot_take2(const struct htr_region *r, uint32_t since, uint64_t since_point,
		       struct htr_snapshot *out, struct htr_error *err);
void htr_snapshot_free(struct htr_snapshot *s);

/* htr_open + htr_snapshot_take + htr_alive + htr_close. */
int htr_read_path(const char *path, uint32_t since, struct htr_snapshot *out,
		  struct htr_error *err);
int htr_read_path2(const char *path, uint32_t since, uint64_t since_point,
		   struct htr_snapshot *out, struct htr_error *err);

/* Writes the control area of the region at path: validates the header through the same
 * checks as htr_open(), then maps only the control page read-write, stores rate (if
 * set_rate) and paused (if set_paused) with release semantics, and bumps control.seq. */
int htr_write_control(const char *path, int set_paused, uint32_t paused, int set_rate,
		      uint64_t rate, struct htr_error *err);

/* The cap on a region's data (HTR_MAX_DATA_BYTES or HEAPTAP_MAX_REGION_BYTES). */
uint64_t htr_max_data_bytes(void);

/* Names, for display and for the addon's constants. NULL past the end. */
const char *htr_drop_name(unsigned reason);     /* HT_DROP_*: "stacks_full", ... */
const char *htr_state_name(unsigned state);     /* HT_STATE_*: "init", "running", "exited" */
const char *htr_module_state_name(unsigned s);  /* HT_MODULE_*: "empty", "loaded", ... */
const char *htr_unwinder_name(unsigned u);      /* index 0 is "unknown", then HT_UNWIND_* */

/* ELF e_machine of this reader's architecture (62 x86-64, 183 arm64), 0 if unknown. */
uint32_t htr_host_arch(void);

/* The symbolizer's side of the fault guard. libelf maps the module files it reads, and those
 * are the profiled process's files: one it can write (a shared library, a debug file in its
 * container) can be truncated while the agent reads it, and the next access past the new
 * end raises SIGBUS. libelf and libdw cannot be jumped out of (C++ frames above them, their
 * own half-built state), so between begin and end, on this thread, such a fault (si_code
 * BUS_ADRERR: a page past the end of the file) is answered by mapping a page of zeros over
 * the faulting page, and the access goes on reading zeros, as from a corrupt file, which
 * libelf and libdw check for. end returns how many pages were so filled: the caller then
 * drops what it read and the file. Nests; a region read's own guard comes first. */
void htr_zero_fill_begin(void);
unsigned htr_zero_fill_end(void);

#ifdef __cplusplus
}
#endif

#endif /* HEAPTAP_READER_H */
