/* Stack table.
 *
 * Records are numbered by a bump counter (hdr.stacks_used), so the per-stack sections
 * (records, shared counters) fill from the front and are reserved as they grow. A separate
 * open-addressed index of ids (2 x capacity slots, linear probing) finds a stack by hash.
 *
 * Insertion never blocks: a new record is written completely and published READY with a
 * release store, then its id is CASed into the first empty index slot of its probe
 * sequence. Two threads adding the same new stack at once both write a record; the loser
 * of the CAS finds the winner's equal stack in that slot, marks its own record DUPLICATE
 * and uses the winner's id. Index slots go from 0 to an id once and never change, so a
 * lookup that reaches an empty slot knows the stack is absent. */
#include <string.h>
#include "stacks.h"

#define MAX_PROBE 512

HT_HIDDEN void (*ht_stack_test_race)(void);

HT_HIDDEN uint64_t ht_stack_hash(const uint64_t *pcs, uint32_t depth)
{
	uint64_t h = 0x2545F4914F6CDD1Dull ^ ((uint64_t)depth * 0x9E3779B97F4A7C15ull);
	for (uint32_t i = 0; i < depth; i++) {
		h ^= pcs[i];
		h *= 0xFF51AFD7ED558CCDull;
		h ^= h >> 32;
	}
	h ^= h >> 29;
	return h ? h : 1;
}

static int same_stack(struct ht_region *r, uint32_t id, uint64_t hash, const uint64_t *pcs,
		      uint32_t depth)
{
	const struct ht_stack *s = &r->stacks[id];
	if (s->hash != hash || s->depth != depth)
		return 0;
	return memcmp(&r->frames[s->frame_off], pcs, depth * sizeof *pcs) == 0;
}

HT_HIDDEN uint32_t ht_stack_intern(struct ht_region *r, const uint64_t *pcs, uint32_t depth,
				   uint32_t flags, int *is_new)
{
	struct ht_header *h = r->hdr;
	uint64_t hash = ht_stack_hash(pcs, depth);
	uint32_t slot = (uint32_t)hash & r->index_mask;
	uint32_t mine = 0;
	*is_new = 0;

	for (uint32_t probe = 0; probe < MAX_PROBE; probe++, slot = (slot + 1) & r->index_mask) {
		/* acquire: the record behind a published id is complete. */
		uint32_t id = ld_acquire(&r->index[slot]);
		if (id) {
			if (same_stack(r, id, hash, pcs, depth)) {
				if (mine)
					st_release(&r->stacks[mine].flags,
						   r->stacks[mine].flags | HT_STACK_DUPLICATE);
				return id;
			}
			continue;
		}
		if (!mine) {
			/* Absent: write a record, then try to claim this slot. */
			uint32_t next = ld_relaxed(&h->stacks_used);
			if (next >= h->stacks.capacity) {
				ht_drop(r, HT_DROP_STACKS_FULL);
				return HT_STACK_OVERFLOW;
			}
			/* Back the next id and its frames before taking them, so a full file
			 * system does not burn ids (and the table) one failed attempt at a time. */
			uint64_t fnext = ld_relaxed(&h->frames_used);
			if (fnext + depth > h->frames.capacity) {
				ht_drop(r, HT_DROP_FRAMES_FULL);
				return HT_STACK_OVERFLOW;
			}
			if (ht_region_reserve_ids(r, (uint64_t)next + 1) != 0 ||
			    ht_region_reserve_frames(r, fnext + depth) != 0) {
				ht_drop(r, HT_DROP_RESERVE_FAILED);
				return HT_STACK_OVERFLOW;
			}
			uint32_t nid = add_relaxed(&h->stacks_used, 1);
			if (nid >= h->stacks.capacity) {
				ht_drop(r, HT_DROP_STACKS_FULL);
				return HT_STACK_OVERFLOW;
			}
			if (ht_region_reserve_ids(r, (uint64_t)nid + 1) != 0) {
				/* Raced past the reserved part: the id is spent, its record unbacked. */
				ht_drop(r, HT_DROP_RESERVE_FAILED);
				return HT_STACK_OVERFLOW;
			}
			uint64_t off = add_relaxed(&h->frames_used, depth);
			struct ht_stack *s = &r->stacks[nid];
			if (off + depth > h->frames.capacity ||
			    ht_region_reserve_frames(r, off + depth) != 0) {
				ht_drop(r, off + depth > h->frames.capacity ? HT_DROP_FRAMES_FULL
									  : HT_DROP_RESERVE_FAILED);
				/* The id is spent: leave a frameless record readers skip. */
				s->hash = hash;
				st_release(&s->flags, HT_STACK_READY | HT_STACK_DUPLICATE);
				return HT_STACK_OVERFLOW;
			}
			for (uint32_t i = 0; i < depth; i++)
				st_relaxed(&r->frames[off + i], pcs[i]);
			s->hash = hash;
			s->frame_off = off;
			s->depth = depth;
			/* READY with release: hash, frame_off, depth and frames are visible to a
			 * reader that sees it. */
			st_release(&s->flags, HT_STACK_READY | flags);
			mine = nid;
		}
		if (HT_UNLIKELY(ht_stack_test_race != NULL))
			ht_stack_test_race();
		uint32_t expect = 0;
		if (__atomic_compare_exchange_n(&r->index[slot], &expect, mine, 0, __ATOMIC_RELEASE,
						__ATOMIC_ACQUIRE)) {
			*is_new = 1;
			return mine;
		}
		/* Lost the slot: look at who won it (the loop re-reads it). */
		slot = (slot - 1) & r->index_mask;
		probe--;
	}
	/* Probe sequence exhausted: the index is too crowded to find a slot. */
	if (mine)
		st_release(&r->stacks[mine].flags, r->stacks[mine].flags | HT_STACK_DUPLICATE);
	ht_drop(r, HT_DROP_STACKS_FULL);
	return HT_STACK_OVERFLOW;
}
