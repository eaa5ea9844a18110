/* The region file: creating it, laying out its sections, reserving backing store before
 * any page is first written, and the liveness lock. See proto/heaptap_region.h. */
#ifndef HT_REGION_H
#define HT_REGION_H
#include <stdint.h>
#include "ht.h"

struct ht_region {
	uint8_t *base;             /* MAP_SHARED read-write mapping of the whole file */
	uint64_t bytes;
	int fd;                    /* O_CLOEXEC; holds LOCK_SH while this image lives */
	struct ht_header *hdr;
	struct ht_control *ctl;
	struct ht_module *modules;
	char *paths;
	uint32_t *index;           /* stack index, capacity index_mask + 1: private memory (the
				    * writer's alone; see ht_region_create) */
	uint32_t index_mask;
	struct ht_stack *stacks;
	uint64_t *frames;
	struct ht_counters *shared;
	struct ht_peak *shared_peak;       /* by stack id, beside shared */
	struct ht_timeline_point *timeline;
	uint8_t *slabs;
	uint32_t slab_bytes;
	/* Backing store reserved so far, in entries from the section start, per growing
	 * section. Read relaxed; grown under reserve_lock. */
	uint64_t reserved_stacks, reserved_shared, reserved_frames, reserved_slabs;
	uint64_t reserved_modules, reserved_paths, reserved_shared_peak, reserved_timeline;
	int reserve_enabled;       /* 0 once fallocate reports EOPNOTSUPP (nothing to gain) */
	ht_spin_t reserve_lock;
	char path[320];
};

/* Creates HEAPTAP_DIR if missing (0700) and checks that we can make files in it. */
HT_HIDDEN int ht_region_check_dir(const struct ht_config *c, char *err, size_t errlen);
/* Creates $dir/<pid>-<start>.heaptap (built under a temporary name and renamed, so a reader
 * never sees a half-made file), maps it and fills the header. state stays INIT until
 * ht_region_publish. Returns 0 or -1 with a reason in err (empty when nothing needs saying:
 * a process refused by the region cap after the first). */
HT_HIDDEN int ht_region_create(struct ht_region *r, const struct ht_config *c,
			       uint32_t flags, char *err, size_t errlen);
/* Stores state RUNNING (release). */
HT_HIDDEN void ht_region_publish(struct ht_region *r);
/* Marks a normal exit. */
HT_HIDDEN void ht_region_mark_exited(struct ht_region *r);
/* Unmaps and closes without touching the file (fork child dropping the parent's). */
HT_HIDDEN void ht_region_detach(struct ht_region *r);

/* Make sure the pages holding entries [0, upto) of a growing section are backed, so a
 * write cannot SIGBUS on a full tmpfs. Return 0, or -1 when the file system is full. */
HT_HIDDEN int ht_region_reserve_ids(struct ht_region *r, uint64_t upto);
HT_HIDDEN int ht_region_reserve_frames(struct ht_region *r, uint64_t upto);
HT_HIDDEN int ht_region_reserve_slabs(struct ht_region *r, uint64_t upto);
HT_HIDDEN int ht_region_reserve_modules(struct ht_region *r, uint64_t upto);
HT_HIDDEN int ht_region_reserve_paths(struct ht_region *r, uint64_t upto);
HT_HIDDEN int ht_region_reserve_timeline(struct ht_region *r, uint64_t upto);
/* Timeline points: the ring's capacity, and the least time between two points. */
#define HT_TIMELINE_POINTS 4096u
#define HT_TIMELINE_GAP_NS 10000000ull
/* Forgets pending drops (a fork child: they were the parent's). */
HT_HIDDEN void ht_region_forget_pending(void);

/* Drops of this process image counted before its region exists (or while it cannot be
 * made); ht_region_create adds them into the new region's header. */
extern HT_HIDDEN uint64_t ht_pending_drops[HT_DROP_SLOTS];

static inline void ht_drop(struct ht_region *r, unsigned reason)
{
	struct ht_header *h = ld_relaxed(&r->hdr);
	add_relaxed(h ? &h->drops[reason] : &ht_pending_drops[reason], 1);
}

static inline uint8_t *ht_slab_at(struct ht_region *r, uint32_t i)
{
	return r->slabs + (uint64_t)i * r->slab_bytes;
}

#endif
