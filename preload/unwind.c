/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Stack unwinding for sampled allocations (see unwind.h for the API).
 *
 * Model. Code on a Debian system is built without frame pointers, so the only complete
 * description of a frame is the DWARF call-frame information in each object's .eh_frame,
 * found through its PT_GNU_EH_FRAME segment (.eh_frame_hdr: a sorted table of
 * (function start, FDE) pairs). One step, from a frame with pc P to its caller:
 *   1. find the object holding P-1 (P itself when P was interrupted by a signal rather
 *      than a return address): glibc's _dl_find_object, lock-free (glibc >= 2.35), else
 *      a snapshot of dl_iterate_phdr taken under the loader's lock;
 *   2. binary-search .eh_frame_hdr for the FDE, parse it and its CIE;
 *   3. run the CIE's and then the FDE's CFA program up to P-1, giving the rules of that
 *      row: CFA = reg + offset (or an expression), and where each register was saved;
 *   4. CFA, return address, and the caller's rbp (a later frame may define its CFA by
 *      rbp) follow from the rules and the registers known so far.
 * Frame 0 is ht_unwind's own frame, with rip, rsp and the callee-saved registers taken
 * by inline asm; unwinding it through its own CFI gives pcs[0].
 *
 * Rule cache. Steps 1-3 cost 900-1700 instructions, 130-230 ns per frame on the machine
 * below (what libgcc's unwinder behind glibc's backtrace() spends too), every time. Almost
 * every row in compiled code has one shape: CFA = rsp or rbp + offset, return address at
 * CFA-8, rbp saved at CFA-8k or untouched. That shape fits in 31 bits, so a global,
 * direct-mapped table of 2^14 single 64-bit words keeps it, keyed by the lookup address L
 * (P-1, or P for a signal-interrupted pc):
 *     slot  = (L ^ L>>14 ^ L>>28) mod 2^14
 *     word  = (L >> 14) << 31 | rule              (needs L < 2^47: user-space x86-64)
 * Given the slot, L>>14 determines L (the low 14 bits are slot ^ bits of L>>14), so the
 * word alone proves which pc it belongs to: a reader that loads it (relaxed) sees either a
 * whole word for its own L or a miss. There is no second word to tear against, no lock and
 * no read-modify-write; writers race with plain relaxed stores and the last one wins, which
 * is fine because any two writers for one L store the same word. A hit costs a hash, one
 * load and the one or two stack reads the rule names: 60-90 instructions, about 9 ns per
 * frame, with the walk's state in registers (ht_fast). Rows of another shape (realigned
 * frames described by expressions, signal trampolines, PLT stubs) are never cached and
 * take the full path each time. A cached step keeps only rsp and rbp; the rare frame whose
 * CFA needs another register (rbx in glibc's _dl_runtime_resolve) makes the walk start
 * over tracking every register (see ht_walk_frames).
 *
 * Worked numbers (Debian 12, glibc 2.36, gcc 12 -O2, 2-vCPU 2 GHz Xeon VM; from
 * bench/unwind_cost.sh, see bench/RESULTS.md). A 30-frame stack: 0.3 us warm, 4-6 us with
 * every frame on the full path, about what glibc's backtrace() takes (4.5-6.5 us). At the
 * default rate (one sample per 512 KiB) a process allocating 1 GB/s takes 1907 samples/s:
 * with 30-frame stacks the unwinder then costs 1907 x 0.3 us = 0.6 ms of CPU per second
 * (0.06% of a core) warm, and 11 ms (1.1%) if every frame missed. The table is 2^14 x 8 bytes = 128 KiB of .bss, touched
 * lazily. With n distinct lookup addresses in use and lambda = n / 2^14, a warm lookup hits
 * with probability (1 - e^-lambda) / lambda (uniform use of the n): 97% for n = 1000, 88%
 * for n = 4096, 63% for n = 16384.
 *
 * Safety. Every read of stack memory lies in [sp at entry, top of the thread's stack), with
 * the top found once per thread and kept in initial-exec TLS. The CFA must strictly
 * increase from frame to frame, except across a signal frame, where the interrupted
 * context may be on the thread's own stack while the handler ran on an alternate one.
 * .eh_frame and .eh_frame_hdr are read as mapped by the loader; a pc that maps to no object
 * ends the walk. Nothing here allocates, locks or makes a syscall per call; per-thread setup
 * (stack bounds) may, once.
 *
 * Threading: ht_unwind and ht_unwind_fp may run on any number of threads at once, and from
 * signal handlers. ht_unwind_init must run once before them (it is cheap and idempotent);
 * without it ht_unwind uses the dl_iterate_phdr path.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE     /* dl_iterate_phdr, RTLD_DEFAULT */
#endif
#include "unwind.h"
#include "modules.h"

#include <dlfcn.h>
#include <link.h>
#include <stddef.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#define HT_UNW_TLS     __thread __attribute__((tls_model("initial-exec")))
/* Stack reads look at other functions' frames by design; ASan must not instrument them. */
#define HT_UNW_NOASAN  __attribute__((no_sanitize_address))
#define HT_UNW_LIKELY(x)   __builtin_expect(!!(x), 1)
#define HT_UNW_UNLIKELY(x) __builtin_expect(!!(x), 0)

#ifdef __GLIBC__
/* Set by ld.so to the stack pointer _start received (it points at argc). */
extern void *__libc_stack_end;
#define ht_main_stack_end() ((uintptr_t)__libc_stack_end)
#else
#include <fcntl.h>
/* musl has no __libc_stack_end: the kernel's record of the same address, field 28
 * (startstack) of /proc/self/stat; 0 if unreadable (then the thread's stack is asked for
 * as for any other thread). */
static uintptr_t ht_main_stack_end(void)
{
	char buf[1024];
	int fd = open("/proc/self/stat", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	ssize_t n = read(fd, buf, sizeof buf - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = 0;
	/* Field 2, (comm), may hold spaces and parentheses: count from the last ')'. */
	char *p = strrchr(buf, ')');
	uintptr_t v = 0;
	for (int field = 2; p && *p; p++) {
		if (*p == ' ' && ++field == 28) {
			while (*++p >= '0' && *p <= '9')
				v = v * 10 + (uintptr_t)(*p - '0');
			return v;
		}
	}
	return 0;
}
#endif

/* ---------------------------------------------------------------------------------------
 * The calling thread's stack bounds, found once per thread. */

/* When the thread's stack is unknown (sp is not below its thread pointer, or not in it: a
 * sigaltstack handler, a coroutine), reads are limited to [sp, sp + 1 MiB). A correct walk
 * never reads above the frames it walks, so this only bounds a walk misled by a corrupted
 * stack; it is then as large as a small thread stack (glibc's minimum is 16 KiB, its default
 * 8 MiB) and may, in that corner, touch unmapped memory. */
#define HT_BLIND_WINDOW ((uintptr_t)1 << 20)
/* Main thread: the stack may grow to RLIMIT_STACK; an unlimited limit counts as this. */
#define HT_MAIN_STACK_MAX ((uintptr_t)1 << 30)

enum { HT_TS_NONE, HT_TS_BUSY, HT_TS_READY, HT_TS_FAILED };
struct ht_tstack {
	uintptr_t lo, hi;
	int state;
};
static HT_UNW_TLS struct ht_tstack ht_ts;

/* The thread pointer (%fs base on x86-64, TPIDR_EL0 on arm64): glibc and musl keep the
 * thread's descriptor there. */
static inline uintptr_t ht_thread_pointer(void)
{
#if defined(__x86_64__)
	uintptr_t tp;
	__asm__("movq %%fs:0, %0" : "=r"(tp));
	return tp;
#elif defined(__aarch64__)
	uintptr_t tp;
	__asm__("mrs %0, tpidr_el0" : "=r"(tp));
	return tp;
#else
	return 0;
#endif
}

/* Once per thread, on its first unwind, from inside an allocation. Nothing here may wait
 * on a lock: this can run inside pthread_getattr_np, which holds the thread's descriptor
 * lock while it mallocs, so asking pthread_getattr_np (as this once did) hung every
 * program whose new threads ask for their own stack bounds (the JVM, Rust's std). The
 * bounds come from what needs no lock:
 *   - the main thread: __libc_stack_end (the sp _start received; on musl the kernel's
 *     record of it) and RLIMIT_STACK;
 *   - any other thread: the thread pointer. Both glibc and musl put a thread's descriptor
 *     (and its static TLS) at the top of the block they map for its stack, and the stack
 *     grows down from just below it; glibc does the same inside a stack the program gave
 *     with pthread_attr_setstack. So every frame of the thread lies in [sp, tp).
 * Only the upper bound matters for safety: walks read at and above the sp they start from.
 * A thread whose sp is not below its thread pointer (a coroutine or sigaltstack stack, a
 * musl thread whose TLS did not fit its own small stack) gets the blind window. BUSY makes
 * a nested call (a signal handler that allocates meanwhile) use the blind window too. */
__attribute__((noinline, cold, unused)) static void ht_thread_setup(uintptr_t sp)
{
	ht_ts.state = HT_TS_BUSY;
	uintptr_t lo = 0, hi = 0;
	if (syscall(SYS_gettid) == (long)getpid()) {
		/* No frame lies above __libc_stack_end: it is the rsp _start received, and
		 * _start's CFI (rip undefined) ends every walk there. So no margin beyond the end
		 * of its page is needed, and that page is mapped (argc, argv and envp start at
		 * __libc_stack_end itself). */
		uintptr_t end = ht_main_stack_end();
		hi = end ? (end | 4095) + 1 : 0;
		uintptr_t lim = HT_MAIN_STACK_MAX;
		struct rlimit rl;
		if (getrlimit(RLIMIT_STACK, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
		    rl.rlim_cur < lim)
			lim = (uintptr_t)rl.rlim_cur;
		lo = hi > lim ? hi - lim : 0;
		/* A child forked from a non-main thread has tid == pid but runs on that thread's
		 * stack: the thread pointer tells its bounds. */
		if (sp < lo || sp >= hi)
			lo = hi = 0;
	}
	if (!hi) {
		uintptr_t tp = ht_thread_pointer();
		if (tp > sp && tp - sp <= HT_MAIN_STACK_MAX) {
			/* The low end is not known without asking; it only decides which sps
			 * count as "on this thread's stack", and 1 GiB below the top is more
			 * than any thread stack. */
			lo = tp > HT_MAIN_STACK_MAX ? tp - HT_MAIN_STACK_MAX : 0;
			hi = tp;
		}
	}
	if (hi > lo) {
		ht_ts.lo = lo;
		ht_ts.hi = hi;
		ht_ts.state = HT_TS_READY;
	} else {
		ht_ts.state = HT_TS_FAILED;
	}
}

/* The readable window for a walk starting at sp. */
struct ht_window {
	uintptr_t lo, hi;   /* reads must lie in [lo, hi) */
	uintptr_t tlo, thi; /* the thread's stack, thi == 0 when unknown */
	int on_thread;      /* [lo, hi) is part of the thread's stack */
};

static inline void ht_window_for(struct ht_window *win, uintptr_t sp)
{
	if (HT_UNW_UNLIKELY(ht_ts.state == HT_TS_NONE))
		ht_thread_setup(sp);
	win->lo = sp;
	if (HT_UNW_LIKELY(ht_ts.state == HT_TS_READY)) {
		win->tlo = ht_ts.lo;
		win->thi = ht_ts.hi;
		if (HT_UNW_LIKELY(sp >= win->tlo && sp < win->thi)) {
			win->hi = win->thi;
			win->on_thread = 1;
			return;
		}
	} else {
		win->tlo = win->thi = 0;
	}
	win->hi = sp + HT_BLIND_WINDOW < sp ? UINTPTR_MAX : sp + HT_BLIND_WINDOW;
	win->on_thread = 0;
}

HT_UNW_NOASAN static inline int ht_rd_stack(const struct ht_window *win, uint64_t a, uint64_t *v)
{
	if (a < win->lo || win->hi - win->lo < 8 || a > win->hi - 8)
		return 0;
	memcpy(v, (const void *)(uintptr_t)a, 8);
	return 1;
}

/* ---------------------------------------------------------------------------------------
 * Frame-pointer walk. x86-64 and arm64 frame records are {saved fp, return address} at fp;
 * RISC-V keeps them just below fp. */

#if defined(__x86_64__) || defined(__aarch64__)
#define HT_FP_NEXT 0
#define HT_FP_RA   8
#elif defined(__riscv) && __riscv_xlen == 64
#define HT_FP_NEXT ((uintptr_t)-16)
#define HT_FP_RA   ((uintptr_t)-8)
#endif

#ifdef HT_FP_RA
/* fp is the walking function's own frame pointer; its record gives pcs[0]. */
static inline int ht_fp_walk(uintptr_t fp, uint64_t *pcs, int max, int *truncated)
{
	struct ht_window win;
	/* Our own record sits at fp (or just below it on RISC-V), above everything else
	 * this function keeps on the stack. */
	ht_window_for(&win, fp + HT_FP_NEXT);
	int n = 0;
	for (;;) {
		uint64_t next, ra;
		if (!ht_rd_stack(&win, fp + HT_FP_NEXT, &next) ||
		    !ht_rd_stack(&win, fp + HT_FP_RA, &ra)) {
			*truncated = 1;
			break;
		}
		if (ra == 0) {
			*truncated = 0;
			break;
		}
		if (n >= max) {
			*truncated = 1;
			break;
		}
		pcs[n++] = ra;
		if (next == 0) {        /* _start and clone3 zero rbp for the outermost frame */
			*truncated = 0;
			break;
		}
		if (next <= fp || (next & 7)) {
			*truncated = 1;
			break;
		}
		fp = (uintptr_t)next;
	}
	return n;
}
#else
/* Frame records of unknown layout: only the caller of the unwinding function. */
static inline __attribute__((always_inline)) int ht_fp_walk(uintptr_t fp, uint64_t *pcs,
							     int max, int *truncated)
{
	(void)fp;
	*truncated = 1;
	if (max < 1)
		return 0;
	pcs[0] = (uint64_t)(uintptr_t)__builtin_return_address(0);
	return 1;
}
#endif

/* __builtin_frame_address(0) makes gcc keep a frame pointer in this function whatever
 * -fomit-frame-pointer says, so the record at fp is our own. */
__attribute__((noinline)) int ht_unwind_fp(uint64_t *pcs, int max, int *truncated)
{
	int n = ht_fp_walk((uintptr_t)__builtin_frame_address(0), pcs, max, truncated);
	__asm__ volatile("" : "+r"(n) : : "memory"); /* no tail call: our frame stays put */
	return n;
}

int ht_unwind_fp_regs(const uint64_t *regs, uint64_t *pcs, int max, int *truncated)
{
	return ht_fp_walk((uintptr_t)regs[2], pcs, max, truncated);
}

static int ht_force_phdr, ht_no_cache;
static HT_UNW_TLS int ht_last_slow;

void ht_unwind_force_phdr(int on) { __atomic_store_n(&ht_force_phdr, on, __ATOMIC_RELAXED); }
void ht_unwind_bypass_cache(int on) { __atomic_store_n(&ht_no_cache, on, __ATOMIC_RELAXED); }
int ht_unwind_last_slow_frames(void) { return ht_last_slow; }

#if !defined(__x86_64__)

void ht_unwind_init(void) {}
void ht_unwind_invalidate(void) {}

__attribute__((noinline)) int ht_unwind(uint64_t *pcs, int max, int *truncated)
{
	int n = ht_fp_walk((uintptr_t)__builtin_frame_address(0), pcs, max, truncated);
	__asm__ volatile("" : "+r"(n) : : "memory");
	return n;
}

int ht_unwind_regs(const uint64_t *regs, uint64_t *pcs, int max, int *truncated)
{
	return ht_unwind_fp_regs(regs, pcs, max, truncated);
}

#else /* __x86_64__: DWARF CFI */

/* ---------------------------------------------------------------------------------------
 * Registers. DWARF numbers on x86-64: 0 rax, 1 rdx, 2 rcx, 3 rbx, 4 rsi, 5 rdi, 6 rbp,
 * 7 rsp, 8-15 r8-r15, 16 return address (rip). Rules for higher numbers (vector registers)
 * are parsed and ignored. */
#define HT_NREG 17
#define HT_RBP  6
#define HT_RSP  7
#define HT_RIP  16
#define HT_BIT(r) (1u << (r))

struct ht_walk {
	uint64_t reg[HT_NREG];
	uint32_t known;         /* HT_BIT(r): reg[r] holds the value in this frame */
	uint64_t pc;            /* this frame's pc */
	int exact;              /* pc was interrupted by a signal: not a return address */
	uint64_t cfa;           /* the previous frame's CFA (sp at entry for frame 0) */
	struct ht_window win;
	int snap;               /* find objects in the dl_iterate_phdr snapshot */
	int full;               /* track every register: no cache reads, no simple rules */
	int need_regs;          /* a rule needed a register this walk had stopped tracking */
	const uint64_t *regs;   /* the captured registers it started from (ht_walk_init) */
};

enum {
	HT_STEP_OK,      /* moved to the caller: w->pc is the next frame */
	HT_STEP_END,     /* the outermost frame: a clean end */
	HT_STEP_ERR,     /* cannot go on: truncated */
	HT_STEP_MORE,    /* another frame, but pcs is full: truncated */
	HT_STEP_SIMPLE,  /* the rule has the cached shape: apply it with ht_fast */
	HT_STEP_MISS,    /* not in the cache: take the full path */
};

/* ---------------------------------------------------------------------------------------
 * Reading .eh_frame: a cursor that refuses to move past its end. */

struct ht_cur {
	const uint8_t *p, *end;
	int bad;
};

static inline int ht_take(struct ht_cur *c, void *out, size_t n)
{
	if (c->bad || (size_t)(c->end - c->p) < n) {
		c->bad = 1;
		memset(out, 0, n);
		return 0;
	}
	memcpy(out, c->p, n);
	c->p += n;
	return 1;
}
static inline uint8_t ht_u8(struct ht_cur *c) { uint8_t v; ht_take(c, &v, 1); return v; }
static inline uint16_t ht_u16(struct ht_cur *c) { uint16_t v; ht_take(c, &v, 2); return v; }
static inline uint32_t ht_u32(struct ht_cur *c) { uint32_t v; ht_take(c, &v, 4); return v; }
static inline uint64_t ht_u64(struct ht_cur *c) { uint64_t v; ht_take(c, &v, 8); return v; }

static inline uint64_t ht_uleb(struct ht_cur *c)
{
	uint64_t v = 0;
	unsigned shift = 0;
	for (;;) {
		if (c->p >= c->end) {
			c->bad = 1;
			return 0;
		}
		uint8_t b = *c->p++;
		if (shift < 64)
			v |= (uint64_t)(b & 0x7f) << shift;
		shift += 7;
		if (!(b & 0x80))
			return v;
	}
}

static inline int64_t ht_sleb(struct ht_cur *c)
{
	uint64_t v = 0;
	unsigned shift = 0;
	uint8_t b;
	do {
		if (c->p >= c->end) {
			c->bad = 1;
			return 0;
		}
		b = *c->p++;
		if (shift < 64)
			v |= (uint64_t)(b & 0x7f) << shift;
		shift += 7;
	} while (b & 0x80);
	if (shift < 64 && (b & 0x40))
		v |= ~(uint64_t)0 << shift;
	return (int64_t)v;
}

/* Pointer encodings (DW_EH_PE_*). */
#define HT_PE_OMIT     0xff
#define HT_PE_ABSPTR   0x00
#define HT_PE_ULEB128  0x01
#define HT_PE_UDATA2   0x02
#define HT_PE_UDATA4   0x03
#define HT_PE_UDATA8   0x04
#define HT_PE_SLEB128  0x09
#define HT_PE_SDATA2   0x0a
#define HT_PE_SDATA4   0x0b
#define HT_PE_SDATA8   0x0c
#define HT_PE_PCREL    0x10
#define HT_PE_DATAREL  0x30
#define HT_PE_INDIRECT 0x80

/* Reads one encoded pointer. datarel is the base for DW_EH_PE_datarel (the start of
 * .eh_frame_hdr there; 0 where it is not defined). deref: follow DW_EH_PE_indirect (the
 * personality pointer is only skipped, so its GOT slot is never read). */
static int ht_read_enc(struct ht_cur *c, uint8_t enc, uint64_t datarel, int deref, uint64_t *out)
{
	const uint8_t *field = c->p;
	uint64_t v;
	switch (enc & 0x0f) {
	case HT_PE_ABSPTR:
	case HT_PE_UDATA8:
	case HT_PE_SDATA8:  v = ht_u64(c); break;
	case HT_PE_ULEB128: v = ht_uleb(c); break;
	case HT_PE_UDATA2:  v = ht_u16(c); break;
	case HT_PE_UDATA4:  v = ht_u32(c); break;
	case HT_PE_SLEB128: v = (uint64_t)ht_sleb(c); break;
	case HT_PE_SDATA2:  v = (uint64_t)(int64_t)(int16_t)ht_u16(c); break;
	case HT_PE_SDATA4:  v = (uint64_t)(int64_t)(int32_t)ht_u32(c); break;
	default: return 0;
	}
	if (c->bad)
		return 0;
	switch (enc & 0x70) {
	case 0x00: break;
	case HT_PE_PCREL: v += (uint64_t)(uintptr_t)field; break;
	case HT_PE_DATAREL:
		if (!datarel)
			return 0;
		v += datarel;
		break;
	default: return 0;     /* textrel, funcrel, aligned: not used on x86-64 */
	}
	if ((enc & HT_PE_INDIRECT) && deref) {
		if (!v)
			return 0;
		memcpy(&v, (const void *)(uintptr_t)v, 8);
	}
	*out = v;
	return 1;
}

/* ---------------------------------------------------------------------------------------
 * Finding the FDE for a pc. */

struct ht_dlfo {               /* glibc's struct dl_find_object (x86-64 layout) */
	unsigned long long flags;
	void *map_start, *map_end;
	void *link_map;
	void *eh_frame;             /* the PT_GNU_EH_FRAME segment: .eh_frame_hdr */
	unsigned long long reserved[16]; /* glibc has 7; spare room costs nothing */
};
typedef int (*ht_dlfo_fn)(void *, struct ht_dlfo *);
static ht_dlfo_fn ht_dlfo;

/* The dl_iterate_phdr fallback's snapshot: every object's [start, end) and .eh_frame_hdr,
 * sorted by start. It is written and read only inside dl_iterate_phdr callbacks, i.e. under
 * the loader's dl_load_write_lock, which serialises all threads; dlpi_adds/dlpi_subs tell
 * when it is stale. ht_in_phdr keeps a signal handler on the same thread (the lock is
 * recursive) from rebuilding it under a walk that is using it. */
#define HT_SNAP_MAX 1024
struct ht_snapobj {
	uintptr_t start, end;
	const uint8_t *hdr;
};
static struct {
	struct ht_snapobj o[HT_SNAP_MAX];
	int n, valid;
	unsigned long long adds, subs;
} ht_snap;
static HT_UNW_TLS int ht_in_phdr;

static const uint8_t *ht_snap_find(uint64_t pc)
{
	int lo = 0, hi = ht_snap.n;
	while (hi - lo > 1) {
		int mid = (lo + hi) / 2;
		if (ht_snap.o[mid].start <= pc)
			lo = mid;
		else
			hi = mid;
	}
	if (hi == 0 || pc < ht_snap.o[lo].start || pc >= ht_snap.o[lo].end)
		return NULL;
	return ht_snap.o[lo].hdr;
}

/* .eh_frame_hdr: version 1, three encodings, eh_frame_ptr, fde_count, then the table.
 * Every linker in use (bfd, gold, lld, mold) writes the table as datarel|sdata4 pairs; any
 * other table encoding is treated as "no table" and ends the walk. */
static const uint8_t *ht_hdr_lookup(const uint8_t *hdr, uint64_t pc)
{
	struct ht_cur c = { hdr, hdr + 64, 0 };
	if (ht_u8(&c) != 1)
		return NULL;
	uint8_t ptr_enc = ht_u8(&c), cnt_enc = ht_u8(&c), tab_enc = ht_u8(&c);
	uint64_t ehf, cnt;
	if (ptr_enc == HT_PE_OMIT || cnt_enc == HT_PE_OMIT || tab_enc != (HT_PE_DATAREL | HT_PE_SDATA4))
		return NULL;
	if (!ht_read_enc(&c, ptr_enc, (uintptr_t)hdr, 1, &ehf) ||
	    !ht_read_enc(&c, cnt_enc, (uintptr_t)hdr, 1, &cnt) || cnt == 0 || cnt > (1u << 30))
		return NULL;
	const uint8_t *tab = c.p;
	int64_t rel = (int64_t)(pc - (uint64_t)(uintptr_t)hdr);
	size_t lo = 0, hi = (size_t)cnt;
	while (hi - lo > 1) {
		size_t mid = lo + (hi - lo) / 2;
		int32_t start;
		memcpy(&start, tab + mid * 8, 4);
		if ((int64_t)start <= rel)
			lo = mid;
		else
			hi = mid;
	}
	int32_t start, fde;
	memcpy(&start, tab + lo * 8, 4);
	memcpy(&fde, tab + lo * 8 + 4, 4);
	if ((int64_t)start > rel)
		return NULL;
	return hdr + fde;
}

/* A parsed FDE with what it needs from its CIE. */
struct ht_fde {
	const uint8_t *cie_insn, *cie_end;   /* CIE initial instructions */
	const uint8_t *insn, *end;           /* FDE instructions */
	uint64_t pc_begin, pc_end;
	uint64_t code_align;
	int64_t data_align;
	const uint8_t *cie;
	uint32_t ra_col;
	uint8_t fde_enc;
	uint8_t signal;                      /* augmentation 'S' */
	uint8_t has_z;                       /* augmentation 'z': FDEs carry augmentation data */
};

/* Length and id of a CIE or FDE at p; *body is after the id, *end after the entry. */
static int ht_entry(const uint8_t *p, const uint8_t **body, const uint8_t **end,
		    uint64_t *id, const uint8_t **id_at)
{
	struct ht_cur c = { p, p + 12, 0 };
	uint64_t len = ht_u32(&c);
	int wide = 0;
	if (len == 0xffffffffu) {
		len = ht_u64(&c);
		wide = 1;
	}
	if (c.bad || len == 0 || len > (1u << 24))  /* 0: the terminator */
		return 0;
	*end = c.p + len;
	*id_at = c.p;
	c.end = *end;
	*id = wide ? ht_u64(&c) : ht_u32(&c);
	if (c.bad)
		return 0;
	*body = c.p;
	return 1;
}

static int ht_parse_cie(const uint8_t *cie, struct ht_fde *f)
{
	const uint8_t *body, *end, *id_at;
	uint64_t id;
	if (!ht_entry(cie, &body, &end, &id, &id_at) || id != 0)
		return 0;
	struct ht_cur c = { body, end, 0 };
	uint8_t version = ht_u8(&c);
	if (version != 1 && version != 3 && version != 4)
		return 0;
	const char *aug = (const char *)c.p;
	while (c.p < end && *c.p)
		c.p++;
	if (c.p++ == end)
		return 0;
	if (version == 4) {
		if (ht_u8(&c) != 8 || ht_u8(&c) != 0)  /* address size, segment selector size */
			return 0;
	}
	f->code_align = ht_uleb(&c);
	f->data_align = ht_sleb(&c);
	uint64_t ra = version == 1 ? ht_u8(&c) : ht_uleb(&c);
	if (c.bad || ra >= HT_NREG)
		return 0;
	f->ra_col = (uint32_t)ra;
	f->cie = cie;
	f->fde_enc = HT_PE_ABSPTR;
	f->signal = 0;
	f->has_z = 0;
	if (aug[0] == 'z') {
		f->has_z = 1;
		uint64_t n = ht_uleb(&c);
		if (c.bad || n > (uint64_t)(end - c.p))
			return 0;
		const uint8_t *data_end = c.p + n;
		for (const char *a = aug + 1; *a; a++) {
			uint64_t skip;
			if (*a == 'R') {
				f->fde_enc = ht_u8(&c);
			} else if (*a == 'L') {
				(void)ht_u8(&c);            /* LSDA encoding: the LSDA is in the FDE */
			} else if (*a == 'P') {
				uint8_t enc = ht_u8(&c);    /* personality: skipped, never followed */
				if (!ht_read_enc(&c, enc & 0x0f, 0, 0, &skip))
					return 0;
			} else if (*a == 'S') {
				f->signal = 1;
			} else {
				break;  /* as libgcc: unknown letters are fine after 'z', their data is skipped */
			}
		}
		if (c.bad || c.p > data_end)
			return 0;
		c.p = data_end;
	} else if (aug[0]) {
		return 0;       /* "eh" (gcc 2.x) and other pre-'z' augmentations */
	}
	f->cie_insn = c.p;
	f->cie_end = end;
	return 1;
}

/* last: the CIE parsed for the previous FDE (last->cie NULL: none). When this FDE has the
 * same CIE, its fields are copied rather than parsed again, and *same says so. */
static int ht_parse_fde(const uint8_t *fde, uint64_t pc, struct ht_fde *f,
			const struct ht_fde *last, int *same)
{
	const uint8_t *body, *end, *id_at;
	uint64_t id;
	if (!ht_entry(fde, &body, &end, &id, &id_at) || id == 0)
		return 0;
	*same = last->cie == id_at - id;
	if (*same)
		*f = *last;
	else if (!ht_parse_cie(id_at - id, f))
		return 0;
	struct ht_cur c = { body, end, 0 };
	uint64_t begin, range;
	if (!ht_read_enc(&c, f->fde_enc, 0, 1, &begin) ||
	    !ht_read_enc(&c, f->fde_enc & 0x0f, 0, 0, &range))
		return 0;
	if (f->has_z) {
		uint64_t n = ht_uleb(&c);
		if (c.bad || n > (uint64_t)(end - c.p))
			return 0;
		c.p += n;
	}
	if (pc < begin || pc - begin >= range)
		return 0;
	f->pc_begin = begin;
	f->pc_end = begin + range;
	f->insn = c.p;
	f->end = end;
	return 1;
}

/* ---------------------------------------------------------------------------------------
 * The CFA program. */

enum {
	HT_R_UNSPEC,     /* no rule: same value (callee-saved convention, as libgcc) */
	HT_R_SAME,
	HT_R_UNDEF,
	HT_R_OFFSET,     /* saved at CFA + off */
	HT_R_VAL_OFFSET, /* value is CFA + off */
	HT_R_REG,        /* value is in register reg */
	HT_R_EXPR,       /* saved at the address expr computes (CFA pushed first) */
	HT_R_VAL_EXPR,   /* value is what expr computes */
	HT_R_CFA_REG,    /* CFA rule: reg + off */
	HT_R_CFA_EXPR,   /* CFA rule: what expr computes (empty stack first) */
};

struct ht_rule {
	const uint8_t *expr;
	int32_t off;            /* offset (ht_fits); for expressions, the length (< 16 MiB) */
	uint8_t how, reg;
};
struct ht_row {
	struct ht_rule cfa;
	struct ht_rule r[HT_NREG];
};

/* gcc nests remember_state only for the epilogue it is in; hand-written code rarely goes
 * past two. Deeper nesting ends the walk. */
#define HT_REMEMBER_DEPTH 6

static inline int ht_fits(int64_t v) { return v >= -((int64_t)1 << 31) && v < ((int64_t)1 << 31); }

/* Runs instructions [p, end) from location loc until the row covering target. init: the
 * row after the CIE's instructions (DW_CFA_restore), NULL while running those. */
static int ht_run_cfa(const uint8_t *p, const uint8_t *end, const struct ht_fde *f,
		      uint64_t target, struct ht_row *row, const struct ht_row *init)
{
	struct ht_row saved[HT_REMEMBER_DEPTH];
	int depth = 0;
	struct ht_cur c = { p, end, 0 };
	uint64_t loc = f->pc_begin;
	while (c.p < c.end && !c.bad) {
		uint8_t op = ht_u8(&c);
		uint64_t reg = op & 0x3f, delta;
		int64_t off;
		const uint8_t *expr;
		switch (op & 0xc0) {
		case 0x40:                          /* DW_CFA_advance_loc */
			delta = reg * f->code_align;
			goto advance;
		case 0x80:                          /* DW_CFA_offset */
			off = (int64_t)(ht_uleb(&c) * (uint64_t)f->data_align);
			goto set_offset;
		case 0xc0:                          /* DW_CFA_restore */
			goto restore;
		}
		switch (op) {
		case 0x00:                          /* DW_CFA_nop */
			continue;
		case 0x01: {                        /* DW_CFA_set_loc */
			uint64_t to;
			if (!ht_read_enc(&c, f->fde_enc, 0, 1, &to))
				return 0;
			if (to > target)
				return 1;
			loc = to;
			continue;
		}
		case 0x02: delta = ht_u8(&c) * f->code_align; goto advance;
		case 0x03: delta = ht_u16(&c) * f->code_align; goto advance;
		case 0x04: delta = ht_u32(&c) * f->code_align; goto advance;
		case 0x05:                          /* DW_CFA_offset_extended */
			reg = ht_uleb(&c);
			off = (int64_t)(ht_uleb(&c) * (uint64_t)f->data_align);
			goto set_offset;
		case 0x06:                          /* DW_CFA_restore_extended */
			reg = ht_uleb(&c);
			goto restore;
		case 0x07:                          /* DW_CFA_undefined */
		case 0x08:                          /* DW_CFA_same_value */
			reg = ht_uleb(&c);
			if (reg < HT_NREG)
				row->r[reg] = (struct ht_rule){ .how = op == 0x07 ? HT_R_UNDEF : HT_R_SAME };
			continue;
		case 0x09: {                        /* DW_CFA_register */
			reg = ht_uleb(&c);
			uint64_t from = ht_uleb(&c);
			if (reg < HT_NREG) {
				if (from >= HT_NREG)
					row->r[reg] = (struct ht_rule){ .how = HT_R_UNDEF };
				else
					row->r[reg] = (struct ht_rule){ .how = HT_R_REG, .reg = (uint8_t)from };
			}
			continue;
		}
		case 0x0a:                          /* DW_CFA_remember_state */
			if (depth == HT_REMEMBER_DEPTH)
				return 0;
			saved[depth++] = *row;
			continue;
		case 0x0b:                          /* DW_CFA_restore_state */
			if (depth == 0)
				return 0;
			*row = saved[--depth];
			continue;
		case 0x0c:                          /* DW_CFA_def_cfa */
			reg = ht_uleb(&c);
			off = (int64_t)ht_uleb(&c);
			goto def_cfa;
		case 0x0d:                          /* DW_CFA_def_cfa_register */
			reg = ht_uleb(&c);
			off = row->cfa.how == HT_R_CFA_REG ? row->cfa.off : 0;
			goto def_cfa;
		case 0x0e:                          /* DW_CFA_def_cfa_offset */
			off = (int64_t)ht_uleb(&c);
			goto cfa_offset;
		case 0x0f: {                        /* DW_CFA_def_cfa_expression */
			uint64_t n = ht_uleb(&c);
			if (c.bad || n > (uint64_t)(c.end - c.p))
				return 0;
			row->cfa = (struct ht_rule){ .how = HT_R_CFA_EXPR, .expr = c.p, .off = (int32_t)n };
			c.p += n;
			continue;
		}
		case 0x10:                          /* DW_CFA_expression */
		case 0x16: {                        /* DW_CFA_val_expression */
			reg = ht_uleb(&c);
			uint64_t n = ht_uleb(&c);
			if (c.bad || n > (uint64_t)(c.end - c.p))
				return 0;
			expr = c.p;
			c.p += n;
			if (reg < HT_NREG)
				row->r[reg] = (struct ht_rule){ .how = op == 0x10 ? HT_R_EXPR : HT_R_VAL_EXPR,
								.expr = expr, .off = (int32_t)n };
			continue;
		}
		case 0x11:                          /* DW_CFA_offset_extended_sf */
			reg = ht_uleb(&c);
			off = (int64_t)((uint64_t)ht_sleb(&c) * (uint64_t)f->data_align);
			goto set_offset;
		case 0x12:                          /* DW_CFA_def_cfa_sf */
			reg = ht_uleb(&c);
			off = (int64_t)((uint64_t)ht_sleb(&c) * (uint64_t)f->data_align);
			goto def_cfa;
		case 0x13:                          /* DW_CFA_def_cfa_offset_sf */
			off = (int64_t)((uint64_t)ht_sleb(&c) * (uint64_t)f->data_align);
			goto cfa_offset;
		case 0x14:                          /* DW_CFA_val_offset */
			reg = ht_uleb(&c);
			off = (int64_t)(ht_uleb(&c) * (uint64_t)f->data_align);
			goto set_val_offset;
		case 0x15:                          /* DW_CFA_val_offset_sf */
			reg = ht_uleb(&c);
			off = (int64_t)((uint64_t)ht_sleb(&c) * (uint64_t)f->data_align);
			goto set_val_offset;
		case 0x2e:                          /* DW_CFA_GNU_args_size: only for landing pads */
			(void)ht_uleb(&c);
			continue;
		case 0x2f:                          /* DW_CFA_GNU_negative_offset_extended */
			reg = ht_uleb(&c);
			off = (int64_t)(0 - ht_uleb(&c) * (uint64_t)f->data_align);
			goto set_offset;
		default:                            /* DW_CFA_GNU_window_save, vendor ops */
			return 0;
		}
	advance:
		if (c.bad)
			return 0;
		if (delta > target - loc)
			return 1;
		loc += delta;
		continue;
	set_offset:
		if (c.bad || !ht_fits(off))
			return 0;
		if (reg < HT_NREG)
			row->r[reg] = (struct ht_rule){ .how = HT_R_OFFSET, .off = (int32_t)off };
		continue;
	set_val_offset:
		if (c.bad || !ht_fits(off))
			return 0;
		if (reg < HT_NREG)
			row->r[reg] = (struct ht_rule){ .how = HT_R_VAL_OFFSET, .off = (int32_t)off };
		continue;
	restore:
		if (reg < HT_NREG)
			row->r[reg] = init ? init->r[reg] : (struct ht_rule){ .how = HT_R_UNSPEC };
		continue;
	def_cfa:
		if (c.bad || reg >= HT_NREG || !ht_fits(off))
			return 0;
		row->cfa = (struct ht_rule){ .how = HT_R_CFA_REG, .reg = (uint8_t)reg, .off = (int32_t)off };
		continue;
	cfa_offset:
		if (c.bad || !ht_fits(off))
			return 0;
		row->cfa.off = (int32_t)off; /* on an expression rule: meaningless, unused */
		continue;
	}
	return !c.bad;
}

/* ---------------------------------------------------------------------------------------
 * DWARF expressions: enough for gcc's realigned frames (DW_OP_breg6 -8; DW_OP_deref), the
 * signal trampoline (DW_OP_breg7 N; DW_OP_deref) and PLT stubs (breg7, breg16, lit, and,
 * ge, shl, plus). Every deref is a stack read, bounds-checked like the rest. */

#define HT_EXPR_STACK 16

HT_UNW_NOASAN static int ht_eval(struct ht_walk *w, const uint8_t *p, int64_t len,
				 int push_cfa, uint64_t cfa, uint64_t *out)
{
	uint64_t st[HT_EXPR_STACK];
	int sp = 0, steps = 0;
	struct ht_cur c = { p, p + len, 0 };
	if (push_cfa)
		st[sp++] = cfa;
#define NEED(k) do { if (sp < (k)) return 0; } while (0)
#define PUSH(v) do { uint64_t v_ = (v); if (sp == HT_EXPR_STACK) return 0; st[sp] = v_; sp++; } while (0)
	while (c.p < c.end) {
		if (++steps > 64)
			return 0;
		uint8_t op = ht_u8(&c);
		uint64_t a, b, reg;
		int64_t off;
		if (op >= 0x30 && op <= 0x4f) {             /* DW_OP_lit0..31 */
			PUSH((uint64_t)(op - 0x30));
			continue;
		}
		if (op >= 0x70 && op <= 0x8f) {             /* DW_OP_breg0..31 */
			reg = op - 0x70;
			off = ht_sleb(&c);
			goto breg;
		}
		switch (op) {
		case 0x92:                                  /* DW_OP_bregx */
			reg = ht_uleb(&c);
			off = ht_sleb(&c);
			goto breg;
		case 0x06:                                  /* DW_OP_deref */
			NEED(1);
			if (!ht_rd_stack(&w->win, st[sp - 1], &st[sp - 1]))
				return 0;
			continue;
		case 0x94: {                                /* DW_OP_deref_size */
			uint8_t n = ht_u8(&c);
			NEED(1);
			if (n == 0 || n > 8 || !ht_rd_stack(&w->win, st[sp - 1], &a))
				return 0;
			st[sp - 1] = n == 8 ? a : a & (((uint64_t)1 << (8 * n)) - 1);
			continue;
		}
		case 0x08: PUSH(ht_u8(&c)); continue;                          /* const1u */
		case 0x09: PUSH((uint64_t)(int64_t)(int8_t)ht_u8(&c)); continue; /* const1s */
		case 0x0a: PUSH(ht_u16(&c)); continue;                         /* const2u */
		case 0x0b: PUSH((uint64_t)(int64_t)(int16_t)ht_u16(&c)); continue;
		case 0x0c: PUSH(ht_u32(&c)); continue;                         /* const4u */
		case 0x0d: PUSH((uint64_t)(int64_t)(int32_t)ht_u32(&c)); continue;
		case 0x0e: case 0x0f: PUSH(ht_u64(&c)); continue;              /* const8u/s */
		case 0x10: PUSH(ht_uleb(&c)); continue;                        /* constu */
		case 0x11: PUSH((uint64_t)ht_sleb(&c)); continue;              /* consts */
		case 0x12: NEED(1); PUSH(st[sp - 1]); continue;                /* dup */
		case 0x13: NEED(1); sp--; continue;                            /* drop */
		case 0x14: NEED(2); PUSH(st[sp - 2]); continue;                /* over */
		case 0x15: {                                                   /* pick */
			uint8_t i = ht_u8(&c);
			NEED(i + 1);
			PUSH(st[sp - 1 - i]);
			continue;
		}
		case 0x16: NEED(2); a = st[sp - 1]; st[sp - 1] = st[sp - 2]; st[sp - 2] = a; continue;
		case 0x17: NEED(3); a = st[sp - 1]; st[sp - 1] = st[sp - 2];  /* rot */
			st[sp - 2] = st[sp - 3]; st[sp - 3] = a; continue;
		case 0x19: NEED(1); if ((int64_t)st[sp - 1] < 0) st[sp - 1] = -st[sp - 1]; continue;
		case 0x1f: NEED(1); st[sp - 1] = -st[sp - 1]; continue;        /* neg */
		case 0x20: NEED(1); st[sp - 1] = ~st[sp - 1]; continue;        /* not */
		case 0x23: NEED(1); st[sp - 1] += ht_uleb(&c); continue;       /* plus_uconst */
		case 0x96: continue;                                           /* nop */
		case 0x2f: case 0x28: {                                        /* skip, bra */
			int16_t d = (int16_t)ht_u16(&c);
			if (op == 0x28) {
				NEED(1);
				if (st[--sp] == 0)
					continue;
			}
			if (c.bad || (d < 0 && (size_t)-d > (size_t)(c.p - p)) ||
			    (d > 0 && d > c.end - c.p))
				return 0;
			c.p += d;
			continue;
		}
		case 0x1a: case 0x1b: case 0x1c: case 0x1d: case 0x1e: case 0x21: case 0x22:
		case 0x24: case 0x25: case 0x26: case 0x27: case 0x29: case 0x2a: case 0x2b:
		case 0x2c: case 0x2d: case 0x2e:
			NEED(2);
			b = st[--sp];
			a = st[sp - 1];
			switch (op) {
			case 0x1a: a &= b; break;
			case 0x1b:                                             /* div (signed) */
				if (b == 0 || ((int64_t)b == -1 && a == (uint64_t)1 << 63))
					return 0;
				a = (uint64_t)((int64_t)a / (int64_t)b);
				break;
			case 0x1c: a -= b; break;
			case 0x1d: if (b == 0) return 0; a %= b; break;
			case 0x1e: a *= b; break;
			case 0x21: a |= b; break;
			case 0x22: a += b; break;
			case 0x24: a = b >= 64 ? 0 : a << b; break;
			case 0x25: a = b >= 64 ? 0 : a >> b; break;
			case 0x26: a = (uint64_t)((int64_t)a >> (b >= 63 ? 63 : b)); break;
			case 0x27: a ^= b; break;
			case 0x29: a = a == b; break;
			case 0x2a: a = (int64_t)a >= (int64_t)b; break;
			case 0x2b: a = (int64_t)a > (int64_t)b; break;
			case 0x2c: a = (int64_t)a <= (int64_t)b; break;
			case 0x2d: a = (int64_t)a < (int64_t)b; break;
			case 0x2e: a = a != b; break;
			}
			st[sp - 1] = a;
			continue;
		default:
			return 0;  /* DW_OP_reg*, TLS, call, piece, entry_value...: unsupported */
		}
	breg:
		if (c.bad)
			return 0;
		if (reg == HT_RIP)      /* the PLT stubs' rule reads this frame's own pc */
			a = w->pc;
		else if (reg < HT_NREG && (w->known & HT_BIT(reg)))
			a = w->reg[reg];
		else {
			w->need_regs = 1;
			return 0;
		}
		PUSH(a + (uint64_t)off);
	}
#undef NEED
#undef PUSH
	if (c.bad || sp < 1)
		return 0;
	*out = st[sp - 1];
	return 1;
}

/* ---------------------------------------------------------------------------------------
 * Moving to the caller. */

/* The caller's CFA must be above the callee's; across a signal frame it may instead lie on
 * the thread's own stack while the handler ran elsewhere (sigaltstack): then the window
 * becomes [interrupted rsp, top of the thread stack). */
static int ht_accept_cfa(struct ht_walk *w, uint64_t cfa, uint64_t new_sp, int signal)
{
	if (signal && !w->win.on_thread && w->win.thi && new_sp >= w->win.tlo &&
	    new_sp < w->win.thi && cfa >= new_sp && cfa <= w->win.thi) {
		w->win.lo = new_sp;
		w->win.hi = w->win.thi;
		w->win.on_thread = 1;
		return 1;
	}
	return cfa > w->cfa && cfa <= w->win.hi;
}

/* The common rule shape, as kept in the cache (31 bits):
 *   bit 0      valid
 *   bit 1      end of stack (return address undefined)
 *   bit 2      CFA is rbp + offset (else rsp + offset)
 *   bit 3      rbp saved at CFA - 8k (else unchanged)
 *   bits 4-9   k, 1..63
 *   bits 10-30 CFA offset / 8, below 16 MiB
 * Return address at CFA - 8. After such a frame only rsp and rbp are known, whether the
 * rule came from the cache or not, so a hit and a miss give the same walk. */
#define HT_C_VALID   (1u << 0)
#define HT_C_END     (1u << 1)
#define HT_C_RBP     (1u << 2)
#define HT_C_SAVED   (1u << 3)
#define HT_C_K_SHIFT 4
#define HT_C_OFF_SHIFT 10
#define HT_C_RULE_BITS 31

static int ht_simple(const struct ht_row *row, const struct ht_fde *f, uint64_t *v)
{
	if (f->signal)
		return 0;
	const struct ht_rule *ra = &row->r[f->ra_col];
	if (ra->how == HT_R_UNDEF) {
		*v = HT_C_VALID | HT_C_END;
		return 1;
	}
	if (f->ra_col != HT_RIP || ra->how != HT_R_OFFSET || ra->off != -8)
		return 0;
	if (row->cfa.how != HT_R_CFA_REG || (row->cfa.reg != HT_RSP && row->cfa.reg != HT_RBP) ||
	    row->cfa.off < 8 || (row->cfa.off & 7) || row->cfa.off >= (int64_t)1 << 24)
		return 0;
	if (row->r[HT_RSP].how != HT_R_UNSPEC)
		return 0;
	uint64_t r = HT_C_VALID | (uint64_t)(row->cfa.off >> 3) << HT_C_OFF_SHIFT;
	if (row->cfa.reg == HT_RBP)
		r |= HT_C_RBP;
	const struct ht_rule *bp = &row->r[HT_RBP];
	if (bp->how == HT_R_OFFSET) {
		if (bp->off >= 0 || (bp->off & 7) || -bp->off / 8 > 63)
			return 0;
		r |= HT_C_SAVED | (uint64_t)(-bp->off / 8) << HT_C_K_SHIFT;
	} else if (bp->how != HT_R_UNSPEC && bp->how != HT_R_SAME) {
		return 0;
	}
	*v = r;
	return 1;
}

static int ht_apply_row(struct ht_walk *w, const struct ht_row *row, const struct ht_fde *f)
{
	if (row->r[f->ra_col].how == HT_R_UNDEF)
		return HT_STEP_END;      /* _start, clone3's thread start: the outermost frame */
	uint64_t cfa;
	if (row->cfa.how == HT_R_CFA_REG) {
		if (!(w->known & HT_BIT(row->cfa.reg))) {
			w->need_regs = 1;
			return HT_STEP_ERR;
		}
		cfa = w->reg[row->cfa.reg] + (uint64_t)row->cfa.off;
	} else if (row->cfa.how == HT_R_CFA_EXPR) {
		if (!ht_eval(w, row->cfa.expr, row->cfa.off, 0, 0, &cfa))
			return HT_STEP_ERR;
	} else {
		return HT_STEP_ERR;
	}
	uint64_t nreg[HT_NREG];
	uint32_t known = w->known | HT_BIT(HT_RSP);
	memcpy(nreg, w->reg, sizeof nreg);
	nreg[HT_RSP] = cfa;
	for (int r = 0; r < HT_NREG; r++) {
		const struct ht_rule *u = &row->r[r];
		uint64_t a;
		switch (u->how) {
		case HT_R_UNSPEC:
		case HT_R_SAME:
			break;
		case HT_R_UNDEF:
			known &= ~HT_BIT(r);
			break;
		case HT_R_OFFSET:
			if (!ht_rd_stack(&w->win, cfa + (uint64_t)u->off, &nreg[r]))
				return HT_STEP_ERR;
			known |= HT_BIT(r);
			break;
		case HT_R_VAL_OFFSET:
			nreg[r] = cfa + (uint64_t)u->off;
			known |= HT_BIT(r);
			break;
		case HT_R_REG:
			if (w->known & HT_BIT(u->reg)) {
				nreg[r] = w->reg[u->reg];
				known |= HT_BIT(r);
			} else {
				known &= ~HT_BIT(r);
			}
			break;
		case HT_R_EXPR:
			if (!ht_eval(w, u->expr, u->off, 1, cfa, &a) || !ht_rd_stack(&w->win, a, &nreg[r]))
				return HT_STEP_ERR;
			known |= HT_BIT(r);
			break;
		case HT_R_VAL_EXPR:
			if (!ht_eval(w, u->expr, u->off, 1, cfa, &nreg[r]))
				return HT_STEP_ERR;
			known |= HT_BIT(r);
			break;
		default:
			return HT_STEP_ERR;
		}
	}
	/* No rule for the return address would leave pc unchanged: a loop, not a caller. */
	if (row->r[f->ra_col].how == HT_R_UNSPEC)
		return HT_STEP_ERR;
	if (!(known & HT_BIT(f->ra_col))) {
		w->need_regs = 1;
		return HT_STEP_ERR;
	}
	if (!ht_accept_cfa(w, cfa, nreg[HT_RSP], f->signal))
		return HT_STEP_ERR;
	memcpy(w->reg, nreg, sizeof nreg);
	w->known = known;
	w->cfa = cfa;
	w->pc = nreg[f->ra_col];
	w->exact = f->signal;    /* the frame below a signal frame was interrupted, not calling */
	return HT_STEP_OK;
}

/* ---------------------------------------------------------------------------------------
 * The rule cache (see the comment at the top). */

#define HT_CACHE_BITS 14
#define HT_CACHE_SLOTS (1u << HT_CACHE_BITS)
static uint64_t ht_cache[HT_CACHE_SLOTS] __attribute__((aligned(64)));

static inline uint32_t ht_cache_slot(uint64_t l)
{
	return (uint32_t)((l ^ (l >> HT_CACHE_BITS) ^ (l >> (2 * HT_CACHE_BITS))) & (HT_CACHE_SLOTS - 1));
}

void ht_unwind_invalidate(void)
{
	for (uint32_t i = 0; i < HT_CACHE_SLOTS; i++)
		__atomic_store_n(&ht_cache[i], 0, __ATOMIC_RELAXED);
}

/* Steps through rules of the cached shape with the walk state in registers: first v (a
 * rule just computed by the full path) if non-zero, then cache hits, until a miss
 * (HT_STEP_MISS, w at the frame that missed) or the end of the walk. Frames go to
 * pcs[*n...]. After such a step only rsp and rbp are known, whether the rule came from the
 * cache or not, so hits and misses give the same walk. */
HT_UNW_NOASAN static inline __attribute__((always_inline)) int
ht_fast(struct ht_walk *w, uint64_t *pcs, int max, int *n, uint64_t v)
{
	if (!v && w->full)
		return HT_STEP_MISS;
	uint64_t pc = w->pc, sp = w->reg[HT_RSP], bp = w->reg[HT_RBP], cfa = w->cfa;
	uint64_t lo = w->win.lo, hi = w->win.hi;
	uint32_t known = w->known;
	int bp_known = (known & HT_BIT(HT_RBP)) != 0, exact = w->exact, k = *n, r;
	for (;;) {
		uint64_t e = v;
		v = 0;
		if (!e) {
			uint64_t l = pc - 1 + (uint64_t)exact;
			e = __atomic_load_n(&ht_cache[ht_cache_slot(l)], __ATOMIC_RELAXED);
			if ((e >> HT_C_RULE_BITS) != (l >> HT_CACHE_BITS) || !(e & HT_C_VALID)) {
				r = HT_STEP_MISS;
				break;
			}
		}
		if (e & HT_C_END) {
			r = HT_STEP_END;
			break;
		}
		if ((e & HT_C_RBP) && !bp_known) {
			w->need_regs = 1;
			r = HT_STEP_ERR;
			break;
		}
		uint64_t next = ((e & HT_C_RBP) ? bp : sp) + ((e >> HT_C_OFF_SHIFT) & ((1u << 21) - 1)) * 8;
		uint64_t ra, bp_at = next - 8 * ((e >> HT_C_K_SHIFT) & 63);
		/* CFA strictly up, and the return address (at CFA-8) and saved rbp (below it)
		 * inside [lo, hi); see ht_rd_stack. */
		if (next <= cfa || next > hi || next - 8 < lo || ((e & HT_C_SAVED) && bp_at < lo)) {
			r = HT_STEP_ERR;
			break;
		}
		memcpy(&ra, (const void *)(uintptr_t)(next - 8), 8);
		if (e & HT_C_SAVED) {
			memcpy(&bp, (const void *)(uintptr_t)bp_at, 8);
			bp_known = 1;
		}
		sp = cfa = next;
		pc = ra;
		exact = 0;
		known = HT_BIT(HT_RSP) | (bp_known ? HT_BIT(HT_RBP) : 0);
		if (ra == 0) {          /* a zero return address ends a stack (as libgcc) */
			r = HT_STEP_END;
			break;
		}
		if (k >= max) {
			r = HT_STEP_MORE;
			break;
		}
		pcs[k++] = ra;
	}
	w->pc = pc;
	w->exact = exact;
	w->reg[HT_RSP] = sp;
	w->reg[HT_RBP] = bp;
	w->known = known;
	w->cfa = cfa;
	*n = k;
	return r;
}

/* The CIE last parsed in this walk, with the row its instructions give: an object's FDEs
 * mostly share one CIE, so consecutive frames in one object parse and run it once. */
struct ht_cie_memo {
	struct ht_fde f;           /* f.cie NULL: empty */
	struct ht_row init;        /* after the CIE's instructions */
};

/* One step from w's frame to its caller through the full CFI path. Rules of the cached
 * shape are stored in the cache and returned in *v (HT_STEP_SIMPLE) for ht_fast to apply,
 * unless the walk is tracking every register. */
static int ht_step_slow(struct ht_walk *w, uint64_t *v, struct ht_cie_memo *m)
{
	uint64_t l = w->pc - (w->exact ? 0 : 1);
	const uint8_t *hdr = NULL;
	if (w->snap) {
		hdr = ht_snap_find(l);
	} else {
		struct ht_dlfo o;
		if (__atomic_load_n(&ht_dlfo, __ATOMIC_RELAXED)((void *)(uintptr_t)l, &o) == 0)
			hdr = o.eh_frame;
	}
	if (!hdr)
		return HT_STEP_ERR;      /* a pc in no object (JIT code, garbage), or no CFI */
	const uint8_t *fde = ht_hdr_lookup(hdr, l);
	struct ht_fde f;
	int memo_hit;
	if (!fde || !ht_parse_fde(fde, l, &f, &m->f, &memo_hit))
		return HT_STEP_ERR;
	if (!memo_hit) {
		m->f.cie = NULL;
		m->init = (struct ht_row){ .cfa = { .how = HT_R_UNSPEC } };
		if (!ht_run_cfa(f.cie_insn, f.cie_end, &f, UINT64_MAX, &m->init, NULL))
			return HT_STEP_ERR;
		m->f = f;
	}
	struct ht_row row = m->init;
	if (!ht_run_cfa(f.insn, f.end, &f, l, &row, &m->init))
		return HT_STEP_ERR;
	uint64_t rule;
	if (ht_simple(&row, &f, &rule)) {
		/* Relaxed is enough: the word is self-validating (see the top of the file). */
		if (l >> 47 == 0)
			__atomic_store_n(&ht_cache[ht_cache_slot(l)],
					 (l >> HT_CACHE_BITS) << HT_C_RULE_BITS | rule, __ATOMIC_RELAXED);
		if (!w->full) {
			*v = rule;
			return HT_STEP_SIMPLE;
		}
	}
	return ht_apply_row(w, &row, &f);
}

/* The registers ht_unwind captures, in this order. */
static const uint8_t ht_captured[] = { HT_RIP, HT_RSP, HT_RBP, 3 /* rbx */, 12, 13, 14, 15 };
#define HT_NCAPTURED (sizeof ht_captured)

/* The walk's first frame, from the captured registers. At every walk: the fields are set
 * one by one (clearing the whole struct and a loop over ht_captured cost about 100
 * instructions a sample), and a walk redone tracking every register starts from here
 * again instead of from a copy taken in advance. */
static inline void ht_walk_init(struct ht_walk *w, const uint64_t *regs)
{
	_Static_assert(HT_NCAPTURED == 8 && HT_NREG == 17, "ht_captured");
	for (int r = 0; r < 3; r++)
		w->reg[r] = 0;
	for (int r = 4; r < 12; r++)
		w->reg[r] = 0;
	w->reg[HT_RIP] = 0;
	w->reg[HT_RSP] = regs[1];
	w->reg[HT_RBP] = regs[2];
	w->reg[3] = regs[3];
	w->reg[12] = regs[4];
	w->reg[13] = regs[5];
	w->reg[14] = regs[6];
	w->reg[15] = regs[7];
	w->known = HT_BIT(HT_RSP) | HT_BIT(HT_RBP) | HT_BIT(3) | HT_BIT(12) | HT_BIT(13) |
		   HT_BIT(14) | HT_BIT(15);
	w->pc = regs[0];
	w->exact = 1;
	w->cfa = regs[1];
	w->snap = 0;
	w->need_regs = 0;
	w->regs = regs;
	w->full = __atomic_load_n(&ht_no_cache, __ATOMIC_RELAXED);
	ht_window_for(&w->win, (uintptr_t)regs[1]);
}

/* A walk through cached rules keeps only rsp and rbp. A frame whose CFA is based on
 * another callee-saved register (glibc's _dl_runtime_resolve uses rbx, some hand-written
 * assembly does the same) then fails, and the walk is redone from the start tracking every
 * register: its result is the one a cache-less walk gives, at the cost of one full walk. */
HT_UNW_NOASAN static int ht_walk_frames(struct ht_walk *w, uint64_t *pcs, int max, int *truncated)
{
	struct ht_cie_memo memo;
	int n, r, slow = 0;
	memo.f.cie = NULL;
again:
	n = 0;
	uint64_t v = 0;
	for (;;) {
		r = ht_fast(w, pcs, max, &n, v);
		v = 0;
		if (r != HT_STEP_MISS)
			break;
		slow++;
		r = ht_step_slow(w, &v, &memo);
		if (r == HT_STEP_SIMPLE)
			continue;
		if (r != HT_STEP_OK)
			break;
		if (w->pc == 0) {
			r = HT_STEP_END;
			break;
		}
		if (n >= max) {
			r = HT_STEP_MORE;
			break;
		}
		/* An interrupted pc is stored + 1 so that every frame is looked up at pc - 1. */
		pcs[n++] = w->pc + (uint64_t)w->exact;
	}
	if (r == HT_STEP_ERR && w->need_regs && !w->full) {
		int snap = w->snap;
		ht_walk_init(w, w->regs);
		w->snap = snap;
		w->full = 1;
		goto again;
	}
	*truncated = r != HT_STEP_END;
	ht_last_slow = slow;
	return n;
}

/* The dl_iterate_phdr path: the walk runs inside the first callback, holding the loader's
 * lock, so no object can be unmapped under it. */
struct ht_phdr_walk {
	struct ht_walk *w;
	uint64_t *pcs;
	int max, *truncated, n, done;
};

static int ht_phdr_collect(struct dl_phdr_info *info, size_t size, void *arg)
{
	(void)size;
	(void)arg;
	uintptr_t lo = UINTPTR_MAX, hi = 0;
	const uint8_t *hdr = NULL;
	for (int i = 0; i < info->dlpi_phnum; i++) {
		const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
		if (ph->p_type == PT_LOAD) {
			if (ph->p_vaddr < lo)
				lo = ph->p_vaddr;
			if (ph->p_vaddr + ph->p_memsz > hi)
				hi = ph->p_vaddr + ph->p_memsz;
		} else if (ph->p_type == PT_GNU_EH_FRAME) {
			hdr = (const uint8_t *)(info->dlpi_addr + ph->p_vaddr);
		}
	}
	if (hi <= lo)
		return 0;
	if (ht_snap.n == HT_SNAP_MAX)
		return 1;       /* the rest stay unknown: their pcs end walks (truncated) */
	ht_snap.o[ht_snap.n++] = (struct ht_snapobj){ info->dlpi_addr + lo, info->dlpi_addr + hi, hdr };
	return 0;
}

static int ht_phdr_first(struct dl_phdr_info *info, size_t size, void *arg)
{
	struct ht_phdr_walk *x = arg;
	int counts = size >= offsetof(struct dl_phdr_info, dlpi_subs) + sizeof info->dlpi_subs;
	if (!counts || !ht_snap.valid || info->dlpi_adds != ht_snap.adds ||
	    info->dlpi_subs != ht_snap.subs) {
		ht_snap.valid = 0;
		ht_snap.n = 0;
		dl_iterate_phdr(ht_phdr_collect, NULL);  /* nested: the loader's lock is recursive */
		for (int i = 1; i < ht_snap.n; i++) {    /* insertion sort: a few hundred objects */
			struct ht_snapobj o = ht_snap.o[i];
			int j = i;
			for (; j > 0 && ht_snap.o[j - 1].start > o.start; j--)
				ht_snap.o[j] = ht_snap.o[j - 1];
			ht_snap.o[j] = o;
		}
		if (counts) {
			ht_snap.adds = info->dlpi_adds;
			ht_snap.subs = info->dlpi_subs;
			ht_snap.valid = 1;
		}
	}
	x->w->snap = 1;
	x->n = ht_walk_frames(x->w, x->pcs, x->max, x->truncated);
	x->done = 1;
	return 1;
}

__attribute__((noinline)) static int ht_unwind_from(const uint64_t *regs, uint64_t *pcs,
						     int max, int *truncated)
{
	struct ht_walk w;
	ht_walk_init(&w, regs);
	if (HT_UNW_LIKELY(__atomic_load_n(&ht_dlfo, __ATOMIC_RELAXED) != NULL &&
			  !__atomic_load_n(&ht_force_phdr, __ATOMIC_RELAXED)))
		return ht_walk_frames(&w, pcs, max, truncated);

	struct ht_phdr_walk x = { &w, pcs, max, truncated, 0, 0 };
	/* Through the loader gate (modules.h): no fork may copy the loader's lock while this
	 * thread holds it. While a fork is under way the walk is skipped (truncated). */
	if (!ht_in_phdr && ht_loader_enter()) {
		ht_in_phdr = 1;
		dl_iterate_phdr(ht_phdr_first, &x);
		ht_in_phdr = 0;
		ht_loader_exit();
	}
	if (!x.done) {
		*truncated = 1;
		ht_last_slow = 0;
	}
	return x.n;
}

/* Frame 0 is this function: its pc, rsp and the callee-saved registers come from one asm
 * statement, so they describe the same instant, and the row of this function's CFI at that
 * pc unwinds it. (A callee-saved register this function has already changed is one its
 * prologue saved, and that row says where.) */
__attribute__((noinline)) int ht_unwind(uint64_t *pcs, int max, int *truncated)
{
	uint64_t regs[HT_NCAPTURED];
	HT_UNWIND_CAPTURE(regs);
	int n = ht_unwind_from(regs, pcs, max, truncated);
	/* Not a tail call: the walk reads this frame, which must stay where it was. */
	__asm__ volatile("" : "+r"(n) : : "memory");
	return n;
}

int ht_unwind_regs(const uint64_t *regs, uint64_t *pcs, int max, int *truncated)
{
	return ht_unwind_from(regs, pcs, max, truncated);
}

void ht_unwind_init(void)
{
	static int done;
	if (__atomic_load_n(&done, __ATOMIC_ACQUIRE))
		return;
	/* Resolved at run time, not linked: libheaptap.so must load on glibc < 2.35 too. */
	void *f = dlsym(RTLD_DEFAULT, "_dl_find_object");
	__atomic_store_n(&ht_dlfo, (ht_dlfo_fn)f, __ATOMIC_RELAXED);
	__atomic_store_n(&done, 1, __ATOMIC_RELEASE);
}

#endif /* __x86_64__ */
