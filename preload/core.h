/* The sampler core: per-thread state, the sampling decision, and recording a sampled
 * allocation or the free of one. interpose.c calls it from the allocator shims; the C
 * tests call it directly, without LD_PRELOAD. */
#ifndef HT_CORE_H
#define HT_CORE_H
#include <stddef.h>
#include <stdint.h>
#include "ht.h"
#include "region.h"
#include "sampler.h"
#include "slab.h"

/* The fast path's whole state, in initial-exec TLS (one %fs-relative load). */
struct ht_thread {
	uint64_t countdown;      /* bytes to the next sample point; an allocation of n bytes
				  * with n < countdown is not sampled. 0: next one goes slow */
	uint32_t busy;           /* recursion guard: inside heaptap on this thread */
	uint32_t state;          /* HT_THREAD_* */
	uint32_t epoch;          /* ht_g.epoch when set up (a fork child re-sets up) */
	uint32_t tid;
	uint64_t rate;           /* the rate countdown was drawn with */
	uint32_t samples;
	uint32_t slab_epoch;     /* epoch + 1 once a slab was sought in that epoch's region */
	struct ht_rng rng;
	struct ht_slab_ref slab;
};
#define HT_THREAD_NEW      0u
#define HT_THREAD_READY    1u
#define HT_THREAD_EXITING  2u  /* its slab is retired; counts go to the shared table */

extern HT_HIDDEN HT_TLS struct ht_thread ht_self;

#define HT_G_UNINIT    0u  /* before ht_core_init: allocations pass through, unsampled */
#define HT_G_ACTIVE    1u
#define HT_G_DISABLED  2u  /* bad configuration, or a child we do not follow */

/* A countdown no program reaches: what a thread gets once heaptap is off. */
#define HT_COUNTDOWN_OFF (1ull << 62)

struct ht_global {
	uint32_t state;          /* HT_G_* */
	uint32_t epoch;          /* fork generation of this process */
	uint64_t rate;           /* current mean interval (control may change it) */
	int need_region;         /* make the region at the next sample */
	uint32_t region_flags;   /* HT_FLAG_* for it */
	struct ht_config cfg;
	struct ht_region region;
	uint64_t self_lo, self_hi; /* our own code: frames to drop */
	ht_spin_t region_lock;
	uint64_t threads_seen;   /* threads set up in this image: their seed ordinals */
};
extern HT_HIDDEN struct ht_global ht_g;

/* Sets up from cfg (already parsed): region, live table, thread-exit hook. flags go into
 * the region header. Returns 0 or -1 with err; on -1 heaptap stays off. */
HT_HIDDEN int ht_core_init(const struct ht_config *cfg, uint32_t flags, char *err, size_t errlen);

/* An allocation of size bytes at p reached the slow path (countdown ran out, exact mode,
 * or a new thread). Decides whether it is sampled; if so unwinds and records it. */
HT_HIDDEN void ht_core_alloc(void *p, size_t size);
/* As ht_core_alloc, with the stack given (tests); returns the stack id or 0 if unsampled. */
HT_HIDDEN uint32_t ht_core_record(void *p, size_t size, const uint64_t *pcs, uint32_t depth,
				  int truncated);
/* p, which ht_live_maybe() flagged, is being freed. */
HT_HIDDEN void ht_core_free(void *p);
/* realloc's halves of ht_core_free: take p out of the live table (1 when it was a live
 * sample of this process), then either count its free or, when the real realloc failed
 * and p still stands, put it back. */
struct ht_live_entry;
HT_HIDDEN int ht_core_take(void *p, struct ht_live_entry *e);
HT_HIDDEN void ht_core_count_free(const struct ht_live_entry *e);
HT_HIDDEN void ht_core_untake(void *p, const struct ht_live_entry *e);
/* heaptap stays off in this process (bad configuration): every thread's next slow path
 * sets its countdown out of reach. */
HT_HIDDEN void ht_core_disable(void);

HT_HIDDEN void ht_core_thread_exit(void);
HT_HIDDEN void ht_core_fork_prepare(void);
HT_HIDDEN void ht_core_fork_parent(void);
HT_HIDDEN void ht_core_fork_child(void);
HT_HIDDEN void ht_core_exit(void);
#endif
