/* Sampling stacks: a sampled allocation is recorded on one of heaptap's own stacks, not on
 * the thread's.
 *
 * Recording (unwinding, interning the stack, making the region) needs about 6 KiB of stack.
 * A thread may call malloc with less than that left (a 64 KiB thread deep in recursion, a
 * JVM thread near its guard zone); the program alone would be fine, and a sample must not
 * be what overflows it. So the interposer's slow path captures the registers of its own
 * frame (the walk starts from there, on the thread's stack) and runs the rest on a stack
 * taken from this pool, leaving the thread's stack with one small frame of ours.
 *
 * The pool has HT_ALT_SLOTS stacks of HT_ALT_BYTES, each mapped with a guard page below it
 * the first time it is used, MAP_NORESERVE (pages cost memory only once touched; the lowest
 * free slot is taken first, so a process with little concurrency maps one or two). A slot
 * is taken with one atomic exchange on its own flag (a thread tries the slot it had last
 * first) and given back with a release store; when every slot is in use, or a slot cannot be mapped, the sample is dropped (HT_DROP_BUSY), never waited
 * for. Threading: any thread, any
 * time; a fork child starts with every slot free (only the forking thread exists there, and
 * it is not inside a sample). */
#ifndef HT_ALTSTACK_H
#define HT_ALTSTACK_H
#include "ht.h"

#define HT_ALT_SLOTS 64
#define HT_ALT_BYTES (64u * 1024u)

/* Turns the pool on (library init). Before it, ht_alt_take gives NULL and callers run on
 * the thread's own stack (the C tests, which link the core without the interposer). */
HT_HIDDEN int ht_alt_init(void);
/* 1 once the pool is mapped. */
HT_HIDDEN int ht_alt_ready(void);
/* The top (16-byte aligned) of a free stack, its slot in *slot; NULL when none is free. */
HT_HIDDEN void *ht_alt_take(int *slot);
HT_HIDDEN void ht_alt_give(int slot);
HT_HIDDEN void ht_alt_fork_child(void);

/* Calls fn(arg) with the stack pointer at top, and returns on the caller's stack. Its CFI
 * (CFA from rbp) lets a debugger or the program's own unwinder walk from fn back onto the
 * thread's stack. Without a pool (or off x86-64) it is a plain call. */
HT_HIDDEN void ht_call_on_stack(void *top, void (*fn)(void *), void *arg);
#endif
