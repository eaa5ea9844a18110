/* The shared stack table: stack ids for frame sequences, append-only, any thread. */
#ifndef HT_STACKS_H
#define HT_STACKS_H
#include "region.h"

HT_HIDDEN uint64_t ht_stack_hash(const uint64_t *pcs, uint32_t depth);
/* Returns the id of the stack pcs[0..depth) (innermost first), adding it if new. When the
 * table, the frame pool or the backing store is full, returns HT_STACK_OVERFLOW and counts
 * the reason. *is_new is set when this call added the stack. Lock-free. */
HT_HIDDEN uint32_t ht_stack_intern(struct ht_region *r, const uint64_t *pcs, uint32_t depth,
				   uint32_t flags, int *is_new);
/* Tests only: called between writing a new record and publishing it in the index, to
 * play another thread that wins the race. NULL in production. */
extern HT_HIDDEN void (*ht_stack_test_race)(void);
#endif
