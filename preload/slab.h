/* Per-thread slabs of stack-keyed cumulative counters, and the shared table behind them.
 *
 * A thread writes only its own slab, with relaxed stores (no read-modify-write); readers
 * in another process sum every ACTIVE and RETIRED slab plus the shared table. When a
 * thread exits its slab is RETIRED with its counts in place. A thread that needs a slab
 * when none is FREE folds a RETIRED one into the shared table (atomic adds) and reuses it;
 * the region-wide hdr.seq is odd during the fold so readers neither lose nor double-count
 * it. Counts that cannot go to a slab (slab full, no slab, thread exiting) go straight to
 * the shared table with atomic adds: exact, just slower. */
#ifndef HT_SLAB_H
#define HT_SLAB_H
#include "region.h"

struct ht_slab_ref {
	struct ht_slab_header *slab;   /* NULL: none (use the shared table) */
	struct ht_slab_entry *entries;
	struct ht_peak *peaks;         /* entries[i]'s row at the latest peak: peaks[i] */
	uint32_t mask;
	uint32_t used;
	uint32_t limit;                /* entries before the slab counts as full (3/4) */
};

/* Takes a FREE slab, or folds and reuses a RETIRED one. Returns 0, or -1 (none: the caller
 * records into the shared table). */
HT_HIDDEN int ht_slab_acquire(struct ht_region *r, struct ht_slab_ref *ref, uint32_t tid);
/* The owner thread is exiting: its counts stay, the slab becomes reusable. */
HT_HIDDEN void ht_slab_retire(struct ht_region *r, struct ht_slab_ref *ref);

/* Adds to the counters of stack id, in the thread's slab when it has room, otherwise in the
 * shared table. objects in HT_OBJ_ONE fixed point. */
HT_HIDDEN void ht_count_alloc(struct ht_region *r, struct ht_slab_ref *ref, uint32_t id,
			      uint64_t objects, uint64_t bytes);
HT_HIDDEN void ht_count_free(struct ht_region *r, struct ht_slab_ref *ref, uint32_t id,
			     uint64_t objects, uint64_t bytes);
/* Bytes of one slab: header, entries, then their struct ht_peak rows (HT_FEATURE_PEAK). */
HT_HIDDEN uint64_t ht_slab_bytes(uint32_t slab_entries);
#endif
