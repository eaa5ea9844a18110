/* Stack unwinding for sampled allocations: DWARF CFI from .eh_frame (correct for code built
 * without frame pointers, which is most of a Debian system) and a frame-pointer walk.
 *
 * Both walks run inside malloc of someone else's program: no allocation, no lock, no
 * syscall per call, and every read of stack memory is checked against the calling thread's
 * stack bounds (found once per thread). ht_unwind needs about 4 KiB of the caller's stack.
 * See unwind.c for the model and the costs.
 *
 * Frames are return addresses, innermost first: pcs[0] is the return address into the
 * function that called ht_unwind / ht_unwind_fp. A frame interrupted by a signal is
 * recorded as its interrupted pc + 1, so that every frame can be symbolized the same way
 * (look up pc - 1). */
#ifndef HT_UNWIND_H
#define HT_UNWIND_H

#include <stdint.h>

/* Call once at library init (single-threaded context, may call dlsym). Idempotent.
 * Resolves glibc's _dl_find_object (2.35+) at run time; without it (older glibc, or before
 * init) ht_unwind finds objects with dl_iterate_phdr: correct, slower, and it takes the
 * loader's (recursive) lock for the walk. */
void ht_unwind_init(void);

/* Unwinds the calling thread. pcs[0] is the return address into the function that called
 * ht_unwind (i.e. the caller's caller frame is pcs[1], etc: innermost first). Returns the
 * number of frames written (<= max). *truncated = 1 when there were more frames than max,
 * or when the unwinder had to stop before reaching the outermost frame (no CFI, bad CFA,
 * read outside the stack, unsupported expression), 0 when it reached the end cleanly. */
__attribute__((noinline)) int ht_unwind(uint64_t *pcs, int max, int *truncated);     /* DWARF CFI (.eh_frame) */
__attribute__((noinline)) int ht_unwind_fp(uint64_t *pcs, int max, int *truncated);  /* frame-pointer chain */

/* A walk captured in one frame and run later, from another stack (the sampling stacks of
 * altstack.h). HT_UNWIND_CAPTURE(regs) stores the registers of the frame it stands in, at
 * that point: rip, rsp, rbp, rbx, r12-r15 on x86-64 (only the frame pointer, regs[2],
 * elsewhere). That frame must stay where it is until the walk is done (the capturing
 * function must not return or tail-call meanwhile). The walks are then those of ht_unwind
 * and ht_unwind_fp: pcs[0] is the capturing function's return address. */
#define HT_UNWIND_NREGS 8
#if defined(__x86_64__)
#define HT_UNWIND_CAPTURE(regs) \
	__asm__ volatile("leaq 0(%%rip), %%rax\n\t" \
			 "movq %%rax, 0(%0)\n\t" \
			 "movq %%rsp, 8(%0)\n\t" \
			 "movq %%rbp, 16(%0)\n\t" \
			 "movq %%rbx, 24(%0)\n\t" \
			 "movq %%r12, 32(%0)\n\t" \
			 "movq %%r13, 40(%0)\n\t" \
			 "movq %%r14, 48(%0)\n\t" \
			 "movq %%r15, 56(%0)" \
			 : : "r"(regs) : "rax", "memory")
#else
#define HT_UNWIND_CAPTURE(regs) \
	do { (regs)[0] = 0; (regs)[1] = (regs)[2] = (uint64_t)(uintptr_t)__builtin_frame_address(0); } while (0)
#endif
int ht_unwind_regs(const uint64_t *regs, uint64_t *pcs, int max, int *truncated);
int ht_unwind_fp_regs(const uint64_t *regs, uint64_t *pcs, int max, int *truncated);

/* Forgets every cached unwind rule. Call after an object was unloaded (dlclose): another
 * object mapped at the same addresses would otherwise be unwound with the old rules (wrong
 * frames, never an unsafe read). Safe to call from any thread at any time; about 16 K
 * relaxed stores. */
void ht_unwind_invalidate(void);

/* For tests and benchmarks. */
/* 1: find objects with dl_iterate_phdr even when _dl_find_object is there. */
void ht_unwind_force_phdr(int on);
/* 1: every frame through the full CFI path (the cache is neither read nor relied on). */
void ht_unwind_bypass_cache(int on);
/* Frames of this thread's latest ht_unwind that needed the full CFI path (cache misses
 * and frames whose rules the cache cannot hold). */
int ht_unwind_last_slow_frames(void);

#endif
