/* Cost of one sampled stack: ns (or instructions, under callgrind) per unwind of a stack
 * of 10, 30 and 64 frames, for
 *   dwarf-warm     ht_unwind, every frame's rule already in the cache
 *   dwarf-nocache  ht_unwind with the cache bypassed: every frame through the full CFI
 *                  path (_dl_find_object, .eh_frame_hdr search, CIE/FDE, CFA program)
 *   dwarf-cold     ht_unwind right after ht_unwind_invalidate(): the full path, plus the
 *                  CPU cache misses of a first walk (the 128 KiB sweep evicts L1/L2)
 *   phdr-nocache   dwarf-nocache without _dl_find_object (glibc < 2.35): objects from the
 *                  dl_iterate_phdr snapshot
 *   fp             ht_unwind_fp on frames built with frame pointers
 *   backtrace    glibc's backtrace() (libgcc's unwinder), the baseline
 * Built and run by bench/unwind_cost.sh, which also says how.
 *
 *   unwind_cost                   timed run, one line per (mode, depth): median ns of 5
 *                                 interleaved passes, each a median of many repetitions
 *   unwind_cost --count MODE D N  N unwinds of MODE at depth D with callgrind collection
 *                                 on only around the unwind calls (--collect-atstart=no)
 */
#include <execinfo.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "unwind.h"

#if defined(__has_include)
#if __has_include(<valgrind/callgrind.h>)
#include <valgrind/callgrind.h>
#endif
#endif
#ifndef CALLGRIND_TOGGLE_COLLECT
#define CALLGRIND_TOGGLE_COLLECT
#endif

#define MAXF 128
#define KEEP() __asm__ volatile("" ::: "memory")

enum mode { WARM, NOCACHE, COLD, PHDR_NOCACHE, FP, BACKTRACE, NMODES };
static const char *const mode_name[NMODES] = { "dwarf-warm", "dwarf-nocache", "dwarf-cold",
					       "phdr-nocache", "fp", "backtrace" };

static uint64_t now_ns(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return (x > y) - (x < y);
}

static uint64_t median(uint64_t *v, int n)
{
	qsort(v, (size_t)n, sizeof v[0], cmp_u64);
	return v[n / 2];
}

/* What the leaf does, set by main before each recursion. */
static struct {
	enum mode mode;
	int count;          /* --count: N collected unwinds; else timed */
	int frames;         /* frames the last unwind returned */
	double ns;          /* timed result: median ns per unwind */
} job;

static uint64_t pcs[MAXF];

static inline int one(enum mode m)
{
	int tr;
	switch (m) {
	case WARM:
	case NOCACHE:
	case COLD:
	case PHDR_NOCACHE: return ht_unwind(pcs, MAXF, &tr);
	case FP:        return ht_unwind_fp(pcs, MAXF, &tr);
	default:        return backtrace((void **)pcs, MAXF);
	}
}

static void prepare(enum mode m)
{
	if (m == COLD)
		ht_unwind_invalidate();
}

/* Warm modes: batches of BATCH back-to-back unwinds, ROUNDS batches, median of the batch
 * means. Cold modes: one unwind per timing (the invalidation in between is not timed),
 * minus the median cost of an empty timing. */
#define BATCH 200
#define ROUNDS 301
#define COLD_ROUNDS 3001

/* With a frame pointer, so that the frame-pointer walk can start here too. */
__attribute__((noipa, optimize("no-omit-frame-pointer"))) static void leaf(void)
{
	enum mode m = job.mode;
	ht_unwind_force_phdr(m == PHDR_NOCACHE);
	ht_unwind_bypass_cache(m == NOCACHE || m == PHDR_NOCACHE);
	prepare(m);
	job.frames = one(m);     /* warms the cache, loads libgcc_s for backtrace() */
	KEEP();
	if (job.count) {
		for (int i = 0; i < job.count; i++) {
			prepare(m);
			CALLGRIND_TOGGLE_COLLECT;
			one(m);
			CALLGRIND_TOGGLE_COLLECT;
			KEEP();
		}
	} else if (m == COLD) {
		static uint64_t t[COLD_ROUNDS], e[COLD_ROUNDS];
		for (int i = 0; i < COLD_ROUNDS; i++) {
			uint64_t a = now_ns();
			KEEP();
			uint64_t b = now_ns();
			e[i] = b - a;
		}
		for (int i = 0; i < COLD_ROUNDS; i++) {
			prepare(m);
			uint64_t a = now_ns();
			one(m);
			KEEP();
			t[i] = now_ns() - a;
		}
		job.ns = (double)median(t, COLD_ROUNDS) - (double)median(e, COLD_ROUNDS);
	} else {
		static uint64_t t[ROUNDS];
		for (int r = 0; r < ROUNDS; r++) {
			uint64_t a = now_ns();
			for (int i = 0; i < BATCH; i++) {
				one(m);
				KEEP();
			}
			t[r] = now_ns() - a;
		}
		job.ns = (double)median(t, ROUNDS) / BATCH;
	}
	ht_unwind_force_phdr(0);
	ht_unwind_bypass_cache(0);
}

/* The stack: up to 64 distinct functions, so that every frame has its own return address
 * and its own CFI (a recursion would repeat one return address and hit the cache even
 * when "cold"). fN calls f(N-1) through a table; f0 calls the leaf. Built without frame
 * pointers (gcc -O2's default, as Debian builds) for the DWARF modes and backtrace(), and
 * with them (pN) for the frame-pointer walk. */
#define NCHAIN 64
typedef int (*chain_fn)(int);
static chain_fn chain[NCHAIN], chain_fp[NCHAIN];
static void leaf(void);

#define F(n)                                                                              \
	__attribute__((noipa)) static int f##n(int left)                                  \
	{                                                                                 \
		int r = left <= 0 ? (leaf(), 0) : chain[left - 1](left - 1);              \
		KEEP();                                                                   \
		return r + n;                                                             \
	}                                                                                 \
	__attribute__((noipa, optimize("no-omit-frame-pointer"))) static int p##n(int left) \
	{                                                                                 \
		int r = left <= 0 ? (leaf(), 0) : chain_fp[left - 1](left - 1);           \
		KEEP();                                                                   \
		return r + n;                                                             \
	}
#define F8(n) F(n##0) F(n##1) F(n##2) F(n##3) F(n##4) F(n##5) F(n##6) F(n##7)
F8(1) F8(2) F8(3) F8(4) F8(5) F8(6) F8(7) F8(8)
#define E(n) f##n##0, f##n##1, f##n##2, f##n##3, f##n##4, f##n##5, f##n##6, f##n##7
#define EP(n) p##n##0, p##n##1, p##n##2, p##n##3, p##n##4, p##n##5, p##n##6, p##n##7
static chain_fn chain[NCHAIN] = { E(1), E(2), E(3), E(4), E(5), E(6), E(7), E(8) };
static chain_fn chain_fp[NCHAIN] = { EP(1), EP(2), EP(3), EP(4), EP(5), EP(6), EP(7), EP(8) };

static int down(int k) { return chain[k](k); }
static int down_fp(int k) { return chain_fp[k](k); }

/* Runs the job at the given total stack depth (frames ht_unwind returns from leaf()). */
__attribute__((noipa)) static void at_depth(int depth)
{
	static int base = -1;
	if (base < 0) {                          /* frames from leaf() with no recursion */
		enum mode m = job.mode;
		int c = job.count;
		job.mode = WARM;
		job.count = 0;
		down(0);
		base = job.frames;
		job.mode = m;
		job.count = c;
	}
	int k = depth - base;           /* f(k) .. f0: k + 1 frames, base counts one */
	if (k < 0)
		k = 0;
	if (k >= NCHAIN)
		k = NCHAIN - 1;
	if (job.mode == FP)
		down_fp(k);
	else
		down(k);
	KEEP();
}

int main(int argc, char **argv)
{
	ht_unwind_init();
	static const int depths[] = { 10, 30, 64 };
	if (argc == 5 && strcmp(argv[1], "--count") == 0) {
		int m = 0;
		while (m < NMODES && strcmp(mode_name[m], argv[2]) != 0)
			m++;
		if (m == NMODES) {
			fprintf(stderr, "unknown mode %s\n", argv[2]);
			return 2;
		}
		job.mode = (enum mode)m;
		job.count = atoi(argv[4]);
		at_depth(atoi(argv[3]));
		printf("%s depth %s: %d frames\n", argv[2], argv[3], job.frames);
		return 0;
	}
	/* PASSES interleaved passes over every (depth, mode), median of the passes: load
	 * from other processes that comes and goes hits all modes alike. */
	enum { PASSES = 5 };
	static uint64_t ns[3][NMODES][PASSES];
	static int frames[3][NMODES];
	for (int p = 0; p < PASSES; p++) {
		for (int d = 0; d < 3; d++) {
			for (int m = 0; m < NMODES; m++) {
				job.mode = (enum mode)m;
				job.count = 0;
				at_depth(depths[d]);
				ns[d][m][p] = (uint64_t)(job.ns * 10);
				frames[d][m] = job.frames;
			}
		}
	}
	printf("%-13s %6s %7s %10s %8s\n", "mode", "depth", "frames", "ns/unwind", "ns/frame");
	for (int d = 0; d < 3; d++) {
		for (int m = 0; m < NMODES; m++) {
			double t = (double)median(ns[d][m], PASSES) / 10;
			printf("%-13s %6d %7d %10.0f %8.1f\n", mode_name[m], depths[d], frames[d][m],
			       t, t / (frames[d][m] ? frames[d][m] : 1));
		}
	}
	return 0;
}
