/* Live sampled allocations: pointer -> (stack id, weights), so that a free is counted
 * against the stack that allocated. Private memory (mmap), never the region.
 *
 * free() asks ht_live_maybe() first: one multiply, one shift, one load and a compare on a
 * counting filter indexed by the pointer's hash. Only when the filter says the pointer may
 * be live does it search the tables. At the default rate a process holds a few thousand
 * live samples, so almost every free stops at the filter.
 *
 * Every free reads a random slot of the filter, so all of it is the working set of free():
 * 2^14 16-bit counters, 32 KiB, fit the first-level data cache beside the program's data
 * (it was 2^16 32-bit ones, 256 KiB: under callgrind's cache model on churn the smaller
 * one cut the library's extra last-level misses by two thirds; first-level misses barely
 * moved, a program that streams through memory evicts the filter between frees either
 * way; bench/RESULTS.md, issue 13). Fewer slots would mean more false positives: n live
 * samples flag about n/16384 of all frees. A false positive costs one table lookup; a false
 * negative would lose a free, so a counter that reaches its maximum stays there for good
 * (ht_live_filter_inc/dec): the slot then always answers "maybe". With 16 bits that takes
 * 65535 live samples in one slot, about a billion in all.
 *
 * The tables are open-addressed (linear probing, tombstones reused by inserts) and come in
 * generations of doubling size: when the newest is half full, the next one is mapped and
 * new samples go there; older ones drain as their allocations are freed. Nothing is ever
 * moved, so inserts and removes from any thread need only CAS on the key word. A pointer
 * is inserted before the allocation is returned and removed before the real free, so for a
 * given pointer the two never race (the program's own synchronisation orders them). */
#ifndef HT_LIVE_H
#define HT_LIVE_H
#include <stdint.h>
#include "ht.h"

#ifndef HT_LIVE_FILTER_BITS
#define HT_LIVE_FILTER_BITS 14
#endif
#define HT_LIVE_FILTER_STUCK 0xFFFFu  /* a counter at this value never moves again */

struct ht_live_entry {
	uint64_t key;       /* the pointer; 0 = empty, 1 = tombstone */
	uint32_t stack_id;
	uint32_t epoch;     /* process epoch (fork count) when sampled */
	uint64_t objects;   /* weight, HT_OBJ_ONE fixed point */
	uint64_t bytes;
};

/* A static array (zero pages until touched), so free() needs no NULL test before it. */
extern HT_HIDDEN uint16_t ht_live_filter[1u << HT_LIVE_FILTER_BITS];

/* Fibonacci hashing of the pointer's low 32 bits: one imul with an immediate and a shift
 * (the 64-bit constant cost a movabs more on every free). Pointers 4 GiB apart share a
 * slot; that is only a false positive. */
static inline uint32_t ht_live_hash(uintptr_t p)
{
	return ((uint32_t)p * 0x9E3779B1u) >> (32 - HT_LIVE_FILTER_BITS);
}

/* Non-zero when p may be a live sample (or is a bootstrap block: see interpose.c). */
static inline int ht_live_maybe(const void *p)
{
	return ld_relaxed(&ht_live_filter[ht_live_hash((uintptr_t)p)]) != 0;
}

/* Goes to label when p may be a live sample: ht_live_maybe() as a branch. On x86-64 the
 * counter is compared in memory (cmpw $0 with an 8-bit immediate, so no length-changing
 * prefix stall), where the compiler loads it and tests it, an instruction more on every
 * free(). */
#if defined(__x86_64__) && defined(__GNUC__)
#define HT_LIVE_MAYBE_GOTO(p, label) \
	__asm__ goto("cmpw $0, (%0,%1,2)\n\tjne %l[" #label "]" \
		     : : "r"(ht_live_filter), "r"((uintptr_t)ht_live_hash((uintptr_t)(p))) \
		     : "cc", "memory" : label)
#else
#define HT_LIVE_MAYBE_GOTO(p, label) do { \
	if (ht_live_maybe(p)) \
		goto label; } while (0)
#endif

/* Adds one to p's counter, unless it is stuck at its maximum. */
static inline void ht_live_filter_inc(const void *p)
{
	uint16_t *c = &ht_live_filter[ht_live_hash((uintptr_t)p)];
	uint16_t v = ld_relaxed(c);
	while (v != HT_LIVE_FILTER_STUCK &&
	       !__atomic_compare_exchange_n(c, &v, (uint16_t)(v + 1), 1, __ATOMIC_RELAXED,
					    __ATOMIC_RELAXED))
		;
}

/* Takes one from p's counter, unless it is stuck (increments may have been lost there). */
static inline void ht_live_filter_dec(const void *p)
{
	uint16_t *c = &ht_live_filter[ht_live_hash((uintptr_t)p)];
	uint16_t v = ld_relaxed(c);
	while (v != HT_LIVE_FILTER_STUCK && v != 0 &&
	       !__atomic_compare_exchange_n(c, &v, (uint16_t)(v - 1), 1, __ATOMIC_RELAXED,
					    __ATOMIC_RELAXED))
		;
}

/* Marks p's filter slot for good: free(p) then always takes the slow path. */
static inline void ht_live_mark(const void *p)
{
	ht_live_filter_inc(p);
}

/* Maps the first table. 0 or -1. */
HT_HIDDEN int ht_live_init(void);
/* Returns 0, or -1 when no table has room (the caller counts HT_DROP_LIVE_FULL). */
HT_HIDDEN int ht_live_insert(const void *p, uint32_t stack_id, uint32_t epoch, uint64_t objects,
			     uint64_t bytes);
/* Removes p; returns 1 and fills *out when it was live, else 0. */
/* Starts loading the slot an insert of p would read first (see live.c). */
HT_HIDDEN void ht_live_prefetch_insert(const void *p);
HT_HIDDEN int ht_live_remove(const void *p, struct ht_live_entry *out);
/* Entries currently live (all generations), by a scan of every table: for tests. */
HT_HIDDEN uint64_t ht_live_count(void);
/* Every filter counter stuck at its maximum: every free looks in the tables, and no insert
 * or remove touches the filter again (a load and a compare instead of a CAS each). Exact
 * mode (rate 1) does this: there every allocation is live in the table, the filter can only
 * say "maybe", and its two CAS per malloc/free pair on lines that every thread writes were
 * pure cost. Stays so for the process: if the control area later sets a larger rate, every
 * free still looks in the table (slower, never wrong). */
HT_HIDDEN void ht_live_filter_stick(void);
/* For fork: the lock that guards growth. */
HT_HIDDEN ht_spin_t *ht_live_grow_lock(void);
/* In a fork child: forget the parent's live samples (see live.c). */
HT_HIDDEN void ht_live_fork_child(void);
#endif
