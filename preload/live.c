#include <string.h>
#include <sys/mman.h>
#include "live.h"

#define EMPTY      0u
#define TOMBSTONE  1u
#define FIRST_BITS 12            /* 4096 entries, 128 KiB of address space */
#define MAX_GENS   18            /* up to 2^29 entries in the last generation */
#define MAX_PROBE  128

struct gen {
	struct ht_live_entry *slots;
	uint64_t mask;
	uint64_t used;   /* slots ever taken (keys + tombstones made from them): only grows */
	/* No count of live entries: it cost an atomic add at every insert and an atomic
	 * subtract at every remove, on this one line that every thread writes (at rate 1, two
	 * per malloc/free pair). A remove that finds nothing (a filter false positive) probes
	 * every generation instead of skipping drained ones: at most half of a generation's
	 * slots are ever taken, so each such probe stops at an empty slot within a few. */
};

HT_HIDDEN uint16_t ht_live_filter[1u << HT_LIVE_FILTER_BITS];
static struct gen gens[MAX_GENS];
static uint32_t ngens;            /* published with release after gens[ngens-1] is set */
static ht_spin_t grow_lock;

HT_HIDDEN ht_spin_t *ht_live_grow_lock(void) { return &grow_lock; }

static uint64_t slot_hash(uintptr_t p)
{
	uint64_t h = (uint64_t)p;
	h ^= h >> 33;
	h *= 0xFF51AFD7ED558CCDull;
	h ^= h >> 33;
	return h;
}

static void *map_anon(size_t bytes)
{
	void *m = mmap(NULL, bytes, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	return m == MAP_FAILED ? NULL : m;
}

static int add_gen(uint32_t bits)
{
	uint32_t n = ngens;
	if (n >= MAX_GENS)
		return -1;
	uint64_t cap = 1ull << bits;
	void *m = map_anon(cap * sizeof(struct ht_live_entry));
	if (!m)
		return -1;
	gens[n].slots = m;
	gens[n].mask = cap - 1;
	gens[n].used = 0;
	/* release: a thread that sees ngens == n + 1 sees gens[n] filled in. */
	st_release(&ngens, n + 1);
	return 0;
}

HT_HIDDEN int ht_live_init(void)
{
	ht_spin_lock(&grow_lock);
	int rc = ld_relaxed(&ngens) ? 0 : add_gen(FIRST_BITS);
	ht_spin_unlock(&grow_lock);
	return rc;
}

static int try_insert(struct gen *g, uintptr_t p, uint32_t stack_id, uint32_t epoch,
		      uint64_t objects, uint64_t bytes)
{
	uint64_t i = slot_hash(p) & g->mask;
	for (int probe = 0; probe < MAX_PROBE; probe++, i = (i + 1) & g->mask) {
		struct ht_live_entry *e = &g->slots[i];
		uint64_t k = ld_relaxed(&e->key);
		if (k != EMPTY && k != TOMBSTONE)
			continue;
		if (!__atomic_compare_exchange_n(&e->key, &k, (uint64_t)p, 0, __ATOMIC_ACQ_REL,
						 __ATOMIC_RELAXED))
			continue;
		e->stack_id = stack_id;
		e->epoch = epoch;
		e->objects = objects;
		e->bytes = bytes;
		if (k == EMPTY)
			add_relaxed(&g->used, 1);
		return 0;
	}
	return -1;
}

HT_HIDDEN int ht_live_insert(const void *ptr, uint32_t stack_id, uint32_t epoch,
			     uint64_t objects, uint64_t bytes)
{
	uintptr_t p = (uintptr_t)ptr;
	if (p <= TOMBSTONE || !ld_acquire(&ngens))
		return -1;
	/* The filter goes up first: a free that follows this allocation (after the program's
	 * own synchronisation) then always looks in the tables. */
	ht_live_filter_inc(ptr);
	for (int attempt = 0; attempt < 2; attempt++) {
		uint32_t n = ld_acquire(&ngens);
		struct gen *g = &gens[n - 1];
		if (ld_relaxed(&g->used) < (g->mask + 1) / 2 &&
		    try_insert(g, p, stack_id, epoch, objects, bytes) == 0)
			return 0;
		/* Newest generation half full (or unlucky): map the next one. */
		ht_spin_lock(&grow_lock);
		if (ld_relaxed(&ngens) == n)
			add_gen(FIRST_BITS + n);
		ht_spin_unlock(&grow_lock);
	}
	ht_live_filter_dec(ptr);
	return -1;
}

/* The slots are spread over tables of up to gigabytes: in a program with many live
 * samples (any at rate 1) the first slot an insert or a remove reads is a cache miss more
 * often than not, and at rate 1 that miss, not the instructions, was much of the time the
 * tables cost (perf, python at rate 1: insert and remove 28% of the run, nine tenths of it
 * on the first key load). An insert's slot is asked for before the stack is walked
 * (ht_core_alloc), so the walk hides the miss: python at rate 1 took 0.93x the time
 * (median of 12 interleaved rounds; churn, whose tables stay small, 0.97x). A remove has
 * nothing to overlap with (it must precede the real free); prefetching its slot in every
 * generation at once was slower than not (the older generations' lines are mostly wasted
 * fetches), so it was not kept. */
HT_HIDDEN void ht_live_prefetch_insert(const void *ptr)
{
	uint32_t n = ld_acquire(&ngens);
	if (n) {
		const struct gen *g = &gens[n - 1];
		__builtin_prefetch(&g->slots[slot_hash((uintptr_t)ptr) & g->mask], 1);
	}
}

HT_HIDDEN int ht_live_remove(const void *ptr, struct ht_live_entry *out)
{
	uintptr_t p = (uintptr_t)ptr;
	uint32_t n = ld_acquire(&ngens);
	uint64_t h = slot_hash(p);
	for (uint32_t gi = n; gi-- > 0;) {
		struct gen *g = &gens[gi];
		uint64_t i = h & g->mask;
		for (int probe = 0; probe < MAX_PROBE; probe++, i = (i + 1) & g->mask) {
			struct ht_live_entry *e = &g->slots[i];
			uint64_t k = ld_acquire(&e->key);
			if (k == EMPTY)
				break;
			if (k != (uint64_t)p)
				continue;
			*out = *e;
			out->key = p;
			st_release(&e->key, TOMBSTONE);
			ht_live_filter_dec(ptr);
			return 1;
		}
	}
	return 0;
}

HT_HIDDEN void ht_live_filter_stick(void)
{
	for (uint32_t i = 0; i < (1u << HT_LIVE_FILTER_BITS); i++)
		st_relaxed(&ht_live_filter[i], (uint16_t)HT_LIVE_FILTER_STUCK);
}

HT_HIDDEN void ht_live_fork_child(void)
{
	/* The parent's live samples are never counted here (their epoch is the parent's), so
	 * the child starts with empty tables: dropping the pages makes the next writes land on
	 * fresh zero pages instead of copying the parent's (each a copy-on-write fault, the
	 * largest cost of a short fork child at rate 1). The filter keeps its counts: the
	 * bootstrap blocks' marks must stay, and a parent pointer it still flags only sends
	 * its free down the slow path to find nothing. */
	uint32_t n = ld_relaxed(&ngens);
	for (uint32_t i = 0; i < n; i++) {
		madvise(gens[i].slots, (gens[i].mask + 1) * sizeof(struct ht_live_entry), MADV_DONTNEED);
		gens[i].used = 0;
	}
}

HT_HIDDEN uint64_t ht_live_count(void)
{
	uint64_t t = 0;
	uint32_t n = ld_acquire(&ngens);
	for (uint32_t i = 0; i < n; i++)
		for (uint64_t j = 0; j <= gens[i].mask; j++)
			t += ld_relaxed(&gens[i].slots[j].key) > TOMBSTONE;
	return t;
}
