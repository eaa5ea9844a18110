#include <string.h>
#include "slab.h"

/* One fold at a time: it is rare (a thread needs a slab and every one is taken) and its
 * odd/even bracket of hdr.seq must not interleave with another's. */
static ht_spin_t fold_lock;

HT_HIDDEN ht_spin_t *ht_slab_fold_lock(void) { return &fold_lock; }

static void bind(struct ht_region *r, struct ht_slab_ref *ref, struct ht_slab_header *s)
{
	uint32_t n = r->hdr->slab_entries;
	ref->slab = s;
	ref->entries = (struct ht_slab_entry *)(s + 1);
	ref->peaks = (struct ht_peak *)(ref->entries + n);
	ref->mask = n - 1;
	ref->used = 0;
	ref->limit = n - n / 4;
}

HT_HIDDEN uint64_t ht_slab_bytes(uint32_t slab_entries)
{
	return sizeof(struct ht_slab_header) +
	       (uint64_t)slab_entries * (sizeof(struct ht_slab_entry) + sizeof(struct ht_peak));
}

/* The peak bookkeeping (struct ht_peak in proto/heaptap_region.h): before an event changes
 * a row, a row last brought up to date before the latest peak records what it held then,
 * which is what it holds now. One compare when the peak has not moved. */
static inline void peak_touch(struct ht_peak *pk, uint64_t gen, const struct ht_counters *c)
{
	if (HT_LIKELY(ld_relaxed(&pk->gen) == gen))
		return;
	st_relaxed(&pk->bytes, (int64_t)(ld_relaxed(&c->alloc_bytes) - ld_relaxed(&c->free_bytes)));
	st_relaxed(&pk->objects,
		   (int64_t)(ld_relaxed(&c->alloc_objects) - ld_relaxed(&c->free_objects)));
	/* release: a reader that sees gen sees bytes and objects. The fence keeps the
	 * event's counter stores that follow from becoming visible before gen (arm64): a
	 * reader that sees the new counters sees the new gen. Once per row per new peak. */
	st_release(&pk->gen, gen);
	__atomic_thread_fence(__ATOMIC_RELEASE);
}

/* A shared-table row is changed by any thread, and by a slab fold, so bringing its peak
 * value up to date takes the row: bit 63 of gen, held for a few instructions by code that
 * waits on nothing else (a spin that is bounded and closes no cycle; readers seeing the bit
 * take the row's current value). Generations only grow: a row is never set back. Returns
 * the row's generation, with the row held. */
#define PEAK_BUSY (1ull << 63)
static uint64_t row_take(struct ht_peak *pk)
{
	for (;;) {
		uint64_t g = ld_relaxed(&pk->gen);
		if (!(g & PEAK_BUSY) &&
		    __atomic_compare_exchange_n(&pk->gen, &g, g | PEAK_BUSY, 1, __ATOMIC_ACQUIRE,
						__ATOMIC_RELAXED))
			return g;
#if defined(__x86_64__) || defined(__i386__)
		__builtin_ia32_pause();
#endif
	}
}

/* With the row held: if its value is from before peak gen, take the row's current value
 * (what it held at that peak). Returns the row's generation after. */
static uint64_t row_bring_up(struct ht_region *r, uint32_t id, uint64_t held, uint64_t gen)
{
	if (held >= gen)
		return held;
	struct ht_peak *pk = &r->shared_peak[id];
	const struct ht_counters *c = &r->shared[id];
	st_relaxed(&pk->bytes, (int64_t)(ld_relaxed(&c->alloc_bytes) - ld_relaxed(&c->free_bytes)));
	st_relaxed(&pk->objects,
		   (int64_t)(ld_relaxed(&c->alloc_objects) - ld_relaxed(&c->free_objects)));
	return gen;
}

static inline void shared_peak_touch(struct ht_region *r, uint32_t id, uint64_t gen)
{
	struct ht_peak *pk = &r->shared_peak[id];
	if (HT_LIKELY(ld_acquire(&pk->gen) == gen))
		return;
	uint64_t g = row_bring_up(r, id, row_take(pk), gen);
	st_release(&pk->gen, g);   /* releases the row */
	__atomic_thread_fence(__ATOMIC_RELEASE);
}

static void clear_entries(struct ht_region *r, struct ht_slab_header *s)
{
	struct ht_slab_entry *e = (struct ht_slab_entry *)(s + 1);
	struct ht_peak *pk = (struct ht_peak *)(e + r->hdr->slab_entries);
	for (uint32_t i = 0; i < r->hdr->slab_entries; i++) {
		if (!e[i].stack_id)
			continue;
		st_relaxed(&pk[i].gen, 0);
		st_relaxed(&pk[i].bytes, 0);
		st_relaxed(&pk[i].objects, 0);
		st_relaxed(&e[i].stack_id, 0);
		st_relaxed(&e[i].c.alloc_objects, 0);
		st_relaxed(&e[i].c.alloc_bytes, 0);
		st_relaxed(&e[i].c.free_objects, 0);
		st_relaxed(&e[i].c.free_bytes, 0);
		st_relaxed(&e[i].c.samples, 0);
	}
	s->used = 0;
}

static void shared_add(struct ht_region *r, uint32_t id, const struct ht_counters *c)
{
	shared_peak_touch(r, id, ld_relaxed(&r->hdr->peak_gen));
	struct ht_counters *d = &r->shared[id];
	if (c->alloc_objects) add_relaxed(&d->alloc_objects, c->alloc_objects);
	if (c->alloc_bytes)   add_relaxed(&d->alloc_bytes, c->alloc_bytes);
	if (c->free_objects)  add_relaxed(&d->free_objects, c->free_objects);
	if (c->free_bytes)    add_relaxed(&d->free_bytes, c->free_bytes);
	if (c->samples)       add_relaxed(&d->samples, c->samples);
}

/* Moves a RETIRED slab's counts into the shared table and empties it. */
static void fold(struct ht_region *r, struct ht_slab_header *s)
{
	struct ht_header *h = r->hdr;
	ht_spin_lock(&fold_lock);
	/* Seqlock writer: seq odd before any change a reader could see... */
	uint64_t seq = ld_relaxed(&h->seq);
	st_relaxed(&h->seq, seq + 1);
	__atomic_thread_fence(__ATOMIC_RELEASE);
	struct ht_slab_entry *e = (struct ht_slab_entry *)(s + 1);
	struct ht_peak *pk = (struct ht_peak *)(e + h->slab_entries);
	uint64_t gen = ld_relaxed(&h->peak_gen);
	for (uint32_t i = 0; i < h->slab_entries; i++) {
		uint32_t id = ld_relaxed(&e[i].stack_id);
		if (!id || id >= h->stacks.capacity)
			continue;
		/* What the entry held at the latest peak moves with its counts, with the shared
		 * row held throughout: no other thread's bring-up can land between the row's
		 * value being taken and this entry's share being added. */
		struct ht_peak *spk = &r->shared_peak[id];
		uint64_t g = row_bring_up(r, id, row_take(spk), gen);
		int64_t pb, po;
		if (pk[i].gen == g) {
			pb = pk[i].bytes;
			po = pk[i].objects;
		} else {
			/* Not touched since before peak g: it holds now what it held then. */
			pb = (int64_t)(e[i].c.alloc_bytes - e[i].c.free_bytes);
			po = (int64_t)(e[i].c.alloc_objects - e[i].c.free_objects);
		}
		struct ht_counters *d = &r->shared[id];
		const struct ht_counters *c = &e[i].c;
		if (c->alloc_objects) add_relaxed(&d->alloc_objects, c->alloc_objects);
		if (c->alloc_bytes)   add_relaxed(&d->alloc_bytes, c->alloc_bytes);
		if (c->free_objects)  add_relaxed(&d->free_objects, c->free_objects);
		if (c->free_bytes)    add_relaxed(&d->free_bytes, c->free_bytes);
		if (c->samples)       add_relaxed(&d->samples, c->samples);
		st_relaxed(&spk->bytes, spk->bytes + pb);
		st_relaxed(&spk->objects, spk->objects + po);
		st_release(&spk->gen, g);   /* releases the row */
	}
	clear_entries(r, s);
	/* ...and even again after the last: a reader whose reads overlapped sees it changed. */
	st_release(&h->seq, seq + 2);
	ht_spin_unlock(&fold_lock);
	add_relaxed(&h->slab_folds, 1);
	s->reuse++;
}

HT_HIDDEN int ht_slab_acquire(struct ht_region *r, struct ht_slab_ref *ref, uint32_t tid)
{
	struct ht_header *h = r->hdr;
	uint32_t n = h->slabs.capacity;
	/* Prefer a never-used or cleanly FREE slab, lowest index first, so the section's
	 * backing store grows from the front. */
	for (uint32_t i = 0; i < n; i++) {
		struct ht_slab_header *s = (struct ht_slab_header *)ht_slab_at(r, i);
		if (i >= ld_relaxed(&r->reserved_slabs) && ht_region_reserve_slabs(r, (uint64_t)i + 1) != 0) {
			ht_drop(r, HT_DROP_RESERVE_FAILED);
			break;
		}
		uint32_t st = HT_SLAB_FREE;
		if (ld_relaxed(&s->state) == HT_SLAB_FREE &&
		    __atomic_compare_exchange_n(&s->state, &st, HT_SLAB_ACTIVE, 0, __ATOMIC_ACQ_REL,
						__ATOMIC_RELAXED)) {
			s->tid = tid;
			s->acquired_ns = ht_now_ns();
			bind(r, ref, s);
			uint32_t hw = ld_relaxed(&h->slabs_used);
			while (hw < i + 1 && !__atomic_compare_exchange_n(&h->slabs_used, &hw, i + 1, 1,
							 __ATOMIC_RELEASE, __ATOMIC_RELAXED))
				;
			return 0;
		}
	}
	for (uint32_t i = 0; i < n && i < ld_relaxed(&r->reserved_slabs); i++) {
		struct ht_slab_header *s = (struct ht_slab_header *)ht_slab_at(r, i);
		uint32_t st = HT_SLAB_RETIRED;
		if (ld_relaxed(&s->state) == HT_SLAB_RETIRED &&
		    __atomic_compare_exchange_n(&s->state, &st, HT_SLAB_FOLDING, 0, __ATOMIC_ACQ_REL,
						__ATOMIC_RELAXED)) {
			fold(r, s);
			s->tid = tid;
			s->acquired_ns = ht_now_ns();
			st_release(&s->state, HT_SLAB_ACTIVE);
			bind(r, ref, s);
			return 0;
		}
	}
	ht_drop(r, HT_DROP_NO_SLAB);
	ref->slab = NULL;
	return -1;
}

HT_HIDDEN void ht_slab_retire(struct ht_region *r, struct ht_slab_ref *ref)
{
	(void)r;
	if (!ref->slab)
		return;
	/* release: the thread's last counter stores are visible before the slab can be
	 * folded by another thread. */
	st_release(&ref->slab->state, HT_SLAB_RETIRED);
	ref->slab = NULL;
}

/* Finds (or makes) the slab entry of stack id; NULL when the slab is full or absent. */
static inline struct ht_slab_entry *entry_for(struct ht_slab_ref *ref, uint32_t id)
{
	if (!ref->slab)
		return NULL;
	uint32_t i = ht_slab_slot(id, ref->mask + 1);
	for (;;) {
		struct ht_slab_entry *e = &ref->entries[i];
		uint32_t cur = e->stack_id;   /* only this thread writes it */
		if (cur == id)
			return e;
		if (cur == HT_STACK_NONE) {
			if (ref->used >= ref->limit)
				return NULL;
			ref->used++;
			st_relaxed(&ref->slab->used, ref->used);
			return e; /* stack_id still 0: the caller publishes it */
		}
		i = (i + 1) & ref->mask;
	}
}

/* Inlined into ht_count_alloc and ht_count_free with is_free constant: each stores only
 * the counters it changes (a relaxed store of an unchanged counter is still a load, an add
 * and a store; at rate 1 this runs at every malloc and every free). */
static inline __attribute__((always_inline)) void
count(struct ht_region *r, struct ht_slab_ref *ref, uint32_t id, const struct ht_counters *c,
      int is_free)
{
	struct ht_slab_entry *e = entry_for(ref, id);
	if (HT_UNLIKELY(!e)) {
		if (ref->slab)
			ht_drop(r, HT_DROP_SLAB_FULL);
		shared_add(r, id, c);
		return;
	}
	peak_touch(&ref->peaks[e - ref->entries], ld_relaxed(&r->hdr->peak_gen), &e->c);
	/* Single writer: plain load, relaxed store of each aligned 64-bit counter. */
	if (!is_free) {
		st_relaxed(&e->c.alloc_objects, e->c.alloc_objects + c->alloc_objects);
		st_relaxed(&e->c.alloc_bytes, e->c.alloc_bytes + c->alloc_bytes);
		st_relaxed(&e->c.samples, e->c.samples + c->samples);
	} else {
		st_relaxed(&e->c.free_objects, e->c.free_objects + c->free_objects);
		st_relaxed(&e->c.free_bytes, e->c.free_bytes + c->free_bytes);
	}
	if (HT_UNLIKELY(e->stack_id == HT_STACK_NONE))
		/* release: a reader that sees the id sees the counters written above. */
		st_release(&e->stack_id, id);
}

HT_HIDDEN void ht_count_alloc(struct ht_region *r, struct ht_slab_ref *ref, uint32_t id,
			      uint64_t objects, uint64_t bytes)
{
	struct ht_counters c = {objects, bytes, 0, 0, 1};
	count(r, ref, id, &c, 0);
}

HT_HIDDEN void ht_count_free(struct ht_region *r, struct ht_slab_ref *ref, uint32_t id,
			     uint64_t objects, uint64_t bytes)
{
	struct ht_counters c = {0, 0, objects, bytes, 0};
	count(r, ref, id, &c, 1);
}
