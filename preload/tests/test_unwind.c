/* Tests for the stack unwinder (unwind.c), called directly, without LD_PRELOAD.
 *
 * Frames are checked against the functions they must fall in, found by name in this
 * executable's own symbol table (dladdr sees only exported symbols, and a test binary
 * exports none), and against glibc's backtrace(), which unwinds with libgcc. */
#include <dlfcn.h>
#include <elf.h>
#include <execinfo.h>
#include <fcntl.h>
#include <link.h>
#include <pthread.h>
#include <signal.h>
#include <stdalign.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ctest.h"
#include "unwind.h"

#define MAXF 256

/* Chain functions: never inlined, cloned or tail-called (the empty asm after each call
 * keeps the call a call), and without frame pointers whatever the build flags say. */
#define CHAIN __attribute__((noipa, optimize("omit-frame-pointer")))
#define FPCHAIN __attribute__((noipa, optimize("no-omit-frame-pointer")))
#define KEEP() __asm__ volatile("" ::: "memory")

/* ---------------------------------------------------------------------------------------
 * Symbols of this executable, from its .symtab. */

static const Elf64_Sym *g_syms;
static const char *g_strs;
static size_t g_nsyms;
static uintptr_t g_bias;

static int find_exe_bias(struct dl_phdr_info *info, size_t size, void *arg)
{
	(void)size;
	(void)arg;
	g_bias = info->dlpi_addr;  /* the first object is the executable */
	return 1;
}

static void load_symbols(void)
{
	if (g_syms)
		return;
	dl_iterate_phdr(find_exe_bias, NULL);
	int fd = open("/proc/self/exe", O_RDONLY);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) != 0) {
		fprintf(stderr, "cannot open /proc/self/exe\n");
		exit(2);
	}
	const uint8_t *f = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
	close(fd);
	const Elf64_Ehdr *eh = (const Elf64_Ehdr *)f;
	const Elf64_Shdr *sh = (const Elf64_Shdr *)(f + eh->e_shoff);
	for (int i = 0; i < eh->e_shnum; i++) {
		if (sh[i].sh_type == SHT_SYMTAB) {
			g_syms = (const Elf64_Sym *)(f + sh[i].sh_offset);
			g_nsyms = sh[i].sh_size / sizeof(Elf64_Sym);
			g_strs = (const char *)(f + sh[sh[i].sh_link].sh_offset);
		}
	}
	if (!g_syms) {
		fprintf(stderr, "test binary has no .symtab (stripped?)\n");
		exit(2);
	}
}

/* Name of the function containing return address pc (looked up at pc - 1). */
static const char *sym(uint64_t pc)
{
	load_symbols();
	uint64_t a = pc - 1;
	for (size_t i = 0; i < g_nsyms; i++) {
		const Elf64_Sym *s = &g_syms[i];
		if (ELF64_ST_TYPE(s->st_info) != STT_FUNC || s->st_value == 0)
			continue;
		uint64_t lo = g_bias + s->st_value;
		if (a >= lo && a < lo + (s->st_size ? s->st_size : 1))
			return g_strs + s->st_name;
	}
	Dl_info di;
	if (dladdr((void *)(uintptr_t)a, &di) && di.dli_fname) {
		const char *base = strrchr(di.dli_fname, '/');
		return base ? base + 1 : di.dli_fname;  /* e.g. "libc.so.6" */
	}
	return "?";
}

static int in_fn(uint64_t pc, const char *name) { return strcmp(sym(pc), name) == 0; }

static int in_libc(uint64_t pc) { return strstr(sym(pc), "libc.so") != NULL; }

/* AddressSanitizer intercepts backtrace() (one more frame, its own, comes first) and
 * qsort() (the interceptor calls the comparator itself before sorting). */
#ifdef __SANITIZE_ADDRESS__
#define BT_SKIP 1
static int in_runtime(uint64_t pc) { return in_libc(pc) || strstr(sym(pc), "libasan.so"); }
#else
#define BT_SKIP 0
static int in_runtime(uint64_t pc) { return in_libc(pc); }
#endif

static void dump(const char *what, const uint64_t *pcs, int n, int truncated)
{
	fprintf(stderr, "  %s: %d frames, truncated=%d\n", what, n, truncated);
	for (int i = 0; i < n; i++)
		fprintf(stderr, "    #%d %#lx %s\n", i, (unsigned long)pcs[i], sym(pcs[i]));
}

/* Index of the first frame at or after from that lies in name, or -1. */
static int find_frame(const uint64_t *pcs, int n, int from, const char *name)
{
	for (int i = from; i < n; i++)
		if (in_fn(pcs[i], name))
			return i;
	return -1;
}

__attribute__((constructor)) static void init_unwinder(void) { ht_unwind_init(); }

/* The return address into _start, the last frame of every main-thread stack. */
static uint64_t g_start_ra;

/* ---------------------------------------------------------------------------------------
 * A chain without frame pointers, unwound by ht_unwind and by backtrace(). */

struct shot {
	uint64_t pcs[MAXF];
	int n, truncated;
	void *bt[MAXF];
	int bt_n;
};
static struct shot g_shot;

CHAIN void chain_d(struct shot *s)
{
	s->n = ht_unwind(s->pcs, MAXF, &s->truncated);
	s->bt_n = backtrace(s->bt, MAXF);
	KEEP();
}
CHAIN void chain_c(struct shot *s) { chain_d(s); KEEP(); }
CHAIN void chain_b(struct shot *s) { chain_c(s); KEEP(); }
CHAIN void chain_a(struct shot *s) { chain_b(s); KEEP(); }

/* Frames after the first must be exactly backtrace()'s (the first ones are return
 * addresses of two different calls in the same function). */
static int same_as_backtrace(const struct shot *s)
{
	if (s->n != s->bt_n - BT_SKIP || s->n < 1)
		return 0;
	for (int i = 1; i < s->n; i++)
		if (s->pcs[i] != (uint64_t)(uintptr_t)s->bt[i + BT_SKIP])
			return 0;
	return in_fn(s->pcs[0], sym((uint64_t)(uintptr_t)s->bt[BT_SKIP]));
}

static void check_chain(const struct shot *s, const char *caller)
{
	const char *want[] = { "chain_d", "chain_c", "chain_b", "chain_a", caller };
	int ok = s->n >= 5;
	for (int i = 0; ok && i < 5; i++)
		ok = in_fn(s->pcs[i], want[i]);
	CHECK(ok, "frames 0-4 are not chain_d, chain_c, chain_b, chain_a, %s", caller);
	CHECK(s->truncated == 0, "walk did not end cleanly");
	CHECK(same_as_backtrace(s), "differs from backtrace() (%d frames)", s->bt_n);
	if (!ok || s->truncated || !same_as_backtrace(s))
		dump("ht_unwind", s->pcs, s->n, s->truncated);
}

__attribute__((noipa)) static void unwinds_a_chain_without_frame_pointers(void)
{
	chain_a(&g_shot);
	KEEP();
	check_chain(&g_shot, "unwinds_a_chain_without_frame_pointers");
	int m = find_frame(g_shot.pcs, g_shot.n, 5, "main");
	CHECK(m > 0, "main not reached");
	CHECK(g_shot.n > 0 && in_fn(g_shot.pcs[g_shot.n - 1], "_start"),
	      "last frame is not in _start");
	if (g_shot.n > 0)
		g_start_ra = g_shot.pcs[g_shot.n - 1];
}

static int same_shot(const struct shot *a, const struct shot *b)
{
	return a->n == b->n && a->truncated == b->truncated &&
	       memcmp(a->pcs, b->pcs, sizeof a->pcs[0] * (size_t)a->n) == 0;
}

__attribute__((noipa)) static void finds_objects_with_dl_iterate_phdr_too(void)
{
	/* One call site for all three walks, so that all their frames can be equal:
	 * _dl_find_object; phdr snapshot with a warm cache; phdr snapshot, cold cache. */
	static struct shot s[3];
	int slow[3];
	static volatile int rounds = 3;  /* not unrolled: one call site for all walks */
	for (int i = 0; i < rounds; i++) {
		ht_unwind_force_phdr(i > 0);
		if (i == 2)
			ht_unwind_invalidate();
		chain_a(&s[i]);
		KEEP();
		slow[i] = ht_unwind_last_slow_frames();
	}
	ht_unwind_force_phdr(0);
	CHECK(same_shot(&s[0], &s[1]), "phdr path (warm) differs from the _dl_find_object path");
	CHECK(same_shot(&s[0], &s[2]), "phdr path (cold) differs from the _dl_find_object path");
	CHECK(s[2].truncated == 0 && slow[2] == s[2].n + 1, "cold phdr walk: %d slow frames of %d",
	      slow[2], s[2].n + 1);
	if (!same_shot(&s[0], &s[2]))
		dump("phdr", s[2].pcs, s[2].n, s[2].truncated);
}

/* ---------------------------------------------------------------------------------------
 * Through libc code without frame pointers: qsort calling back into us. */

static struct shot g_qs;
static int g_qs_taken;

CHAIN static int qsort_cmp(const void *a, const void *b)
{
	if (!g_qs_taken) {
		g_qs_taken = 1;
		g_qs.n = ht_unwind(g_qs.pcs, MAXF, &g_qs.truncated);
		g_qs.bt_n = backtrace(g_qs.bt, MAXF);
	}
	int x = *(const int *)a, y = *(const int *)b;
	return (x > y) - (x < y);
}

CHAIN static void qsort_caller(void)
{
	int v[64];
	for (int i = 0; i < 64; i++)
		v[i] = (i * 37) % 64;
	qsort(v, 64, sizeof v[0], qsort_cmp);
	KEEP();
}

__attribute__((noipa)) static void unwinds_through_libc_from_a_qsort_callback(void)
{
	g_qs_taken = 0;
	qsort_caller();
	KEEP();
	const struct shot *s = &g_qs;
	int libc = 1;
	int q = find_frame(s->pcs, s->n, 1, "qsort_caller");
	for (int i = 1; q > 1 && i < q; i++)
		libc &= in_runtime(s->pcs[i]);
	CHECK(s->n > 0 && in_fn(s->pcs[0], "qsort_cmp"), "frame 0 is not the comparator");
	CHECK(q > 1 && libc, "no libc frames between the comparator and qsort_caller");
	CHECK(q > 0 && q + 1 < s->n && in_fn(s->pcs[q + 1], "unwinds_through_libc_from_a_qsort_callback"),
	      "the test function does not follow qsort_caller");
	CHECK(find_frame(s->pcs, s->n, 1, "main") > q, "main not reached");
	CHECK(s->truncated == 0, "walk did not end cleanly");
	CHECK(same_as_backtrace(s), "differs from backtrace()");
	if (q < 0 || s->truncated || !same_as_backtrace(s))
		dump("qsort", s->pcs, s->n, s->truncated);
}

/* ---------------------------------------------------------------------------------------
 * Threads. */

CHAIN static void *thread_body(void *arg)
{
	chain_a(arg);
	KEEP();
	return NULL;
}

__attribute__((noipa)) static void unwinds_a_thread_to_its_start(void)
{
	struct shot s;
	memset(&s, 0, sizeof s);
	pthread_t t;
	pthread_create(&t, NULL, thread_body, &s);
	pthread_join(t, NULL);
	check_chain(&s, "thread_body");
	/* thread_body <- start_thread <- clone3's child entry, which marks rip undefined */
	CHECK(s.n == 7 && in_libc(s.pcs[5]) && in_libc(s.pcs[6]),
	      "expected start_thread and clone3 after thread_body, got %d frames", s.n);
}

/* ---------------------------------------------------------------------------------------
 * Depth limits. */

__attribute__((noipa)) static void stops_at_max_frames_and_says_truncated(void)
{
	/* ht_unwind from a known place with several limits */
	int got3, got_n, got_nm1, got_big, got0;
	int t3, tn, tnm1, tbig, t0;
	uint64_t a3[MAXF], an[MAXF], anm1[MAXF], abig[MAXF], a0[1];
	got_big = ht_unwind(abig, MAXF, &tbig);
	got3 = ht_unwind(a3, 3, &t3);
	got_n = ht_unwind(an, got_big, &tn);
	got_nm1 = ht_unwind(anm1, got_big - 1, &tnm1);
	got0 = ht_unwind(a0, 0, &t0);
	KEEP();
	CHECK(tbig == 0 && got_big >= 4, "full walk: %d frames, truncated=%d", got_big, tbig);
	CHECK(got3 == 3 && t3 == 1, "max 3: %d frames, truncated=%d", got3, t3);
	CHECK(got_n == got_big && tn == 0, "max = depth: %d frames, truncated=%d", got_n, tn);
	CHECK(got_nm1 == got_big - 1 && tnm1 == 1, "max = depth-1: %d frames, truncated=%d",
	      got_nm1, tnm1);
	CHECK(got0 == 0 && t0 == 1, "max 0: %d frames, truncated=%d", got0, t0);
	/* the frames after the first (different call sites) agree */
	CHECK(memcmp(a3 + 1, abig + 1, 2 * sizeof a3[0]) == 0, "max 3 frames differ");
	CHECK(memcmp(anm1 + 1, abig + 1, (size_t)(got_big - 2) * sizeof a3[0]) == 0,
	      "max depth-1 frames differ");
}

/* ---------------------------------------------------------------------------------------
 * The rule cache. */

__attribute__((noipa)) static void takes_every_frame_from_the_cache_the_second_time(void)
{
	static struct shot s[2];
	int slow[2];
	static volatile int rounds = 2;  /* not unrolled: one call site for both walks */
	ht_unwind_invalidate();
	for (int i = 0; i < rounds; i++) {
		chain_a(&s[i]);
		KEEP();
		slow[i] = ht_unwind_last_slow_frames();
	}
	CHECK(same_shot(&s[0], &s[1]), "second walk differs");
	CHECK(slow[0] == s[0].n + 1, "cold walk: %d slow frames for %d frames + the end",
	      slow[0], s[0].n);
	CHECK(slow[1] == 0, "warm walk: %d slow frames", slow[1]);
}

/* The cached walk keeps only rsp and rbp; a walk with the cache bypassed tracks every
 * register through the full CFI path. Both must give the same frames. */
__attribute__((noipa)) static void walks_the_same_with_the_cache_bypassed(void)
{
	static struct shot s[3];
	int slow[3];
	static volatile int rounds = 3;  /* one call site: warm, bypassed, warm again */
	for (int i = 0; i < rounds; i++) {
		ht_unwind_bypass_cache(i == 1);
		chain_a(&s[i]);
		KEEP();
		slow[i] = ht_unwind_last_slow_frames();
	}
	ht_unwind_bypass_cache(0);
	CHECK(same_shot(&s[0], &s[1]) && same_shot(&s[0], &s[2]), "bypassed walk differs");
	CHECK(slow[1] == s[1].n + 1, "bypassed walk: %d slow frames for %d frames + the end",
	      slow[1], s[1].n);
	CHECK(slow[2] == 0, "warm walk after a bypassed one: %d slow frames", slow[2]);
	if (!same_shot(&s[0], &s[1]))
		dump("bypassed", s[1].pcs, s[1].n, s[1].truncated);
}

#define RACE_THREADS 4
#define RACE_ROUNDS 100000

struct race {
	const struct shot *ref;  /* NULL: just take one walk into out */
	struct shot *out;
	int id, rounds, mismatches;
	pthread_barrier_t *bar;
};

CHAIN static void race_leaf(struct shot *s)
{
	s->n = ht_unwind(s->pcs, MAXF, &s->truncated);
	KEEP();
}
CHAIN static void race_mid(struct shot *s) { race_leaf(s); KEEP(); }

static void *race_thread(void *arg)
{
	struct race *r = arg;
	struct shot *s = r->out;
	if (r->bar)
		pthread_barrier_wait(r->bar);
	for (int i = 0; i < r->rounds; i++) {
		/* Thread 0 empties the cache now and then, so that the others read slots while
		 * they are being refilled. */
		if (r->id == 0 && r->bar && i % 1000 == 0)
			ht_unwind_invalidate();
		race_mid(s);
		KEEP();
		if (r->ref && (s->n != r->ref->n || s->truncated != r->ref->truncated ||
			       memcmp(s->pcs, r->ref->pcs, sizeof s->pcs[0] * (size_t)s->n) != 0))
			r->mismatches++;
	}
	return NULL;
}

__attribute__((noipa)) static void gives_the_same_stacks_from_four_threads_at_once(void)
{
	static struct shot ref, out[RACE_THREADS];
	pthread_t t[RACE_THREADS];
	ht_unwind_invalidate();
	struct race one = { NULL, &ref, 0, 1, 0, NULL };   /* alone, from a cold cache */
	pthread_create(&t[0], NULL, race_thread, &one);
	pthread_join(t[0], NULL);
	CHECK(ref.truncated == 0 && ref.n == 5, "reference walk: %d frames, truncated=%d",
	      ref.n, ref.truncated);
	pthread_barrier_t bar;
	pthread_barrier_init(&bar, NULL, RACE_THREADS);
	struct race r[RACE_THREADS];
	for (int i = 0; i < RACE_THREADS; i++) {
		r[i] = (struct race){ &ref, &out[i], i, RACE_ROUNDS, 0, &bar };
		pthread_create(&t[i], NULL, race_thread, &r[i]);
	}
	int bad = 0;
	for (int i = 0; i < RACE_THREADS; i++) {
		pthread_join(t[i], NULL);
		bad += r[i].mismatches;
	}
	pthread_barrier_destroy(&bar);
	CHECK(bad == 0, "%d of %d concurrent walks differ from the single-threaded one", bad,
	      RACE_THREADS * RACE_ROUNDS);
}

/* ---------------------------------------------------------------------------------------
 * Frames whose stack gcc realigns. */

static struct shot g_re;

CHAIN static void realign_leaf(void)
{
	g_re.n = ht_unwind(g_re.pcs, MAXF, &g_re.truncated);
	g_re.bt_n = backtrace(g_re.bt, MAXF);
	KEEP();
}

/* rbp-based frame: push rbp; mov rsp,rbp; and $-16,rsp (CFA = rbp+16). */
__attribute__((noipa, force_align_arg_pointer)) static int realign_arg_pointer(int x)
{
	volatile char buf[40];
	buf[0] = (char)x;
	realign_leaf();
	KEEP();
	return buf[0];
}

/* Over-aligned local plus alloca: gcc realigns through a DRAP register and describes the
 * frame with DW_CFA_def_cfa_expression (DW_OP_breg6 -N; DW_OP_deref) and
 * DW_CFA_expression rules. */
__attribute__((noipa)) static int realign_drap(int n)
{
	alignas(64) volatile char big[64];
	volatile char *dyn = __builtin_alloca((size_t)n);
	big[0] = (char)n;
	dyn[0] = 1;
	realign_leaf();
	KEEP();
	return big[0] + dyn[0];
}

static void check_realigned(const char *fn, const char *caller)
{
	const struct shot *s = &g_re;
	int ok = s->n >= 3 && in_fn(s->pcs[0], "realign_leaf") && in_fn(s->pcs[1], fn) &&
		 in_fn(s->pcs[2], caller);
	/* Either the right frames to the end, or a stop flagged as truncated: never garbage. */
	CHECK(ok || (s->truncated && s->n <= 2), "%s: wrong frames", fn);
	CHECK(s->truncated == 0 && same_as_backtrace(s), "%s: not unwound through (truncated=%d)",
	      fn, s->truncated);
	if (!ok || s->truncated || !same_as_backtrace(s))
		dump(fn, s->pcs, s->n, s->truncated);
}

__attribute__((noipa)) static void unwinds_through_realigned_frames(void)
{
	realign_arg_pointer(3);
	KEEP();
	check_realigned("realign_arg_pointer", "unwinds_through_realigned_frames");
	realign_drap(24);
	KEEP();
	check_realigned("realign_drap", "unwinds_through_realigned_frames");
	ht_unwind_invalidate();
	realign_drap(40);                /* the expression rules from a cold cache, too */
	KEEP();
	check_realigned("realign_drap", "unwinds_through_realigned_frames");
}

/* A frame whose CFA is rbx-based, as in glibc's _dl_runtime_resolve: a walk that keeps
 * only rsp and rbp from cached rules must notice and redo the walk tracking rbx. */
void rbx_frame(void (*fn)(void));
__asm__(".text\n"
	".globl rbx_frame\n"
	".type rbx_frame, @function\n"
	"rbx_frame:\n"
	".cfi_startproc\n"
	"push %rbx\n"
	".cfi_adjust_cfa_offset 8\n"
	".cfi_rel_offset %rbx, 0\n"
	"mov %rsp, %rbx\n"
	".cfi_def_cfa_register %rbx\n"
	"and $-64, %rsp\n"
	"call *%rdi\n"
	"mov %rbx, %rsp\n"
	".cfi_def_cfa_register %rsp\n"
	"pop %rbx\n"
	".cfi_adjust_cfa_offset -8\n"
	".cfi_restore %rbx\n"
	"ret\n"
	".cfi_endproc\n"
	".size rbx_frame, .-rbx_frame\n");

static struct shot g_rbx;

CHAIN static void rbx_leaf(void)
{
	__asm__ volatile("xor %%ebx, %%ebx" ::: "rbx");  /* saved by the prologue, then changed */
	g_rbx.n = ht_unwind(g_rbx.pcs, MAXF, &g_rbx.truncated);
	g_rbx.bt_n = backtrace(g_rbx.bt, MAXF);
	KEEP();
}

__attribute__((noipa)) static void unwinds_through_a_frame_whose_cfa_is_in_rbx(void)
{
	static volatile int rounds = 2;  /* cold, then warm cache, from one call site */
	static struct shot s[2];
	ht_unwind_invalidate();
	for (int i = 0; i < rounds; i++) {
		rbx_frame(rbx_leaf);
		KEEP();
		s[i] = g_rbx;
	}
	for (int i = 0; i < 2; i++) {
		int ok = s[i].n >= 3 && in_fn(s[i].pcs[0], "rbx_leaf") &&
			 in_fn(s[i].pcs[1], "rbx_frame") &&
			 in_fn(s[i].pcs[2], "unwinds_through_a_frame_whose_cfa_is_in_rbx");
		CHECK(ok && s[i].truncated == 0 && same_as_backtrace(&s[i]),
		      "%s walk: wrong frames or truncated", i ? "warm" : "cold");
		if (!ok || s[i].truncated)
			dump("rbx", s[i].pcs, s[i].n, s[i].truncated);
	}
}

/* A frame whose CFI lies: it says the return address is at CFA-8 = rsp after a push of
 * 0x4321, so the caller's pc is 0x4321, which lies in no object. The walk reports that pc
 * (JIT code without CFI looks the same and is worth a frame) and stops there, truncated. */
void garbage_ra_frame(void (*fn)(void));
__asm__(".text\n"
	".globl garbage_ra_frame\n"
	".type garbage_ra_frame, @function\n"
	"garbage_ra_frame:\n"
	".cfi_startproc\n"
	"push $0x4321\n"          /* deliberately no .cfi_adjust_cfa_offset */
	"call *%rdi\n"
	"add $8, %rsp\n"
	"ret\n"
	".cfi_endproc\n"
	".size garbage_ra_frame, .-garbage_ra_frame\n");

static struct shot g_garbage;

CHAIN static void garbage_leaf(void)
{
	g_garbage.n = ht_unwind(g_garbage.pcs, MAXF, &g_garbage.truncated);
	KEEP();
}

__attribute__((noipa)) static void stops_at_a_return_address_in_no_object(void)
{
	static volatile int rounds = 2;  /* cold, then warm cache */
	for (int i = 0; i < rounds; i++) {
		memset(&g_garbage, 0, sizeof g_garbage);
		garbage_ra_frame(garbage_leaf);
		KEEP();
		const struct shot *s = &g_garbage;
		CHECK(s->n == 3 && in_fn(s->pcs[0], "garbage_leaf") &&
		      in_fn(s->pcs[1], "garbage_ra_frame") && s->pcs[2] == 0x4321 && s->truncated == 1,
		      "%s walk: expected garbage_leaf, garbage_ra_frame, 0x4321, truncated",
		      i ? "warm" : "cold");
		if (s->n != 3 || !s->truncated)
			dump("garbage", s->pcs, s->n, s->truncated);
	}
}

/* ---------------------------------------------------------------------------------------
 * Frame-pointer walk. */

static struct shot g_fp;
static int g_fp_max = MAXF;

FPCHAIN void fp_c(void)
{
	g_fp.n = ht_unwind_fp(g_fp.pcs, g_fp_max, &g_fp.truncated);
	KEEP();
}
FPCHAIN void fp_b(void) { fp_c(); KEEP(); }
FPCHAIN void fp_a(void) { fp_b(); KEEP(); }

__attribute__((noipa)) static void walks_a_frame_pointer_chain(void)
{
	fp_a();
	KEEP();
	const struct shot *s = &g_fp;
	/* The record of fp_a holds the return address into its caller, which itself keeps
	 * no frame pointer: what comes after that depends on rbp there, but stays inside
	 * the stack and ends without a crash. */
	int ok = s->n >= 4 && in_fn(s->pcs[0], "fp_c") && in_fn(s->pcs[1], "fp_b") &&
		 in_fn(s->pcs[2], "fp_a") && in_fn(s->pcs[3], "walks_a_frame_pointer_chain");
	CHECK(ok, "frame-pointer chain not walked");
	if (!ok)
		dump("fp", s->pcs, s->n, s->truncated);
	g_fp_max = 2;
	fp_a();
	KEEP();
	g_fp_max = MAXF;
	CHECK(s->n == 2 && s->truncated == 1 && in_fn(s->pcs[1], "fp_b"),
	      "fp max 2: %d frames, truncated=%d", s->n, s->truncated);
}

/* ---------------------------------------------------------------------------------------
 * Signal handlers: on an alternate stack, and at random points of a busy program. */

static struct shot g_sig;
static struct shot g_sig_fp;

static void on_sigusr1(int sig)
{
	(void)sig;
	g_sig.n = ht_unwind(g_sig.pcs, MAXF, &g_sig.truncated);
	g_sig_fp.n = ht_unwind_fp(g_sig_fp.pcs, MAXF, &g_sig_fp.truncated);
	KEEP();
}

CHAIN static void raiser(void)
{
	raise(SIGUSR1);
	KEEP();
}

__attribute__((noipa)) static void unwinds_from_a_handler_on_an_alternate_stack(void)
{
	size_t size = 64 * 1024;
	void *alt = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	stack_t ss = { .ss_sp = alt, .ss_size = size, .ss_flags = 0 }, old;
	sigaltstack(&ss, &old);
	struct sigaction sa, osa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_sigusr1;
	sa.sa_flags = SA_ONSTACK;
	sigaction(SIGUSR1, &sa, &osa);
	raiser();
	KEEP();
	sigaction(SIGUSR1, &osa, NULL);
	sigaltstack(&old, NULL);
	munmap(alt, size);

	const struct shot *s = &g_sig;
	int r = find_frame(s->pcs, s->n, 1, "raiser");
	CHECK(s->n > 0 && in_fn(s->pcs[0], "on_sigusr1"), "frame 0 is not the handler");
	CHECK(r > 1, "raiser not reached through the signal frame");
	CHECK(r > 0 && r + 1 < s->n &&
	      in_fn(s->pcs[r + 1], "unwinds_from_a_handler_on_an_alternate_stack"),
	      "the test function does not follow raiser");
	CHECK(s->truncated == 0 && s->n > 0 && s->pcs[s->n - 1] == g_start_ra,
	      "walk did not end cleanly in _start");
	if (r < 0 || s->truncated)
		dump("altstack", s->pcs, s->n, s->truncated);
	CHECK(g_sig_fp.n >= 1 && in_fn(g_sig_fp.pcs[0], "on_sigusr1"), "fp walk from the handler");
}

/* SIGALRM every 20 us from a CLOCK_MONOTONIC timer while the program sorts, formats,
 * copies, reads the clock (vDSO) and calls through PLT stubs: the handler unwinds from
 * wherever it landed, prologues and epilogues included. */
/* Until 20000 handler walks, or 3 s (a sanitizer or valgrind build gets fewer). */
#define FUZZ_MAX 20000
#define FUZZ_NS 3000000000L
static volatile int g_fz_n, g_fz_clean, g_fz_bad_end, g_fz_fp;
/* Bumped by the busy loop: the handler unwinds only after progress, so a slow build
 * (sanitizers) cannot spend all its time in handlers. */
static volatile unsigned g_fz_progress, g_fz_seen;
static struct shot g_fz_bad[4];

static void on_alarm(int sig)
{
	(void)sig;
	if (g_fz_progress == g_fz_seen)
		return;
	g_fz_seen = g_fz_progress;
	uint64_t pcs[MAXF];
	int tr;
	int n = ht_unwind(pcs, MAXF, &tr);
	if (!tr) {
		g_fz_clean = g_fz_clean + 1;
		if (pcs[n - 1] != g_start_ra)
			g_fz_bad_end = g_fz_bad_end + 1;
	} else if (g_fz_n - g_fz_clean < 4) {
		struct shot *b = &g_fz_bad[g_fz_n - g_fz_clean];
		memcpy(b->pcs, pcs, sizeof pcs[0] * (size_t)n);
		b->n = n;
		b->truncated = tr;
	}
	g_fz_n = g_fz_n + 1;
	int n2 = ht_unwind_fp(pcs, MAXF, &tr);
	g_fz_fp = g_fz_fp + (n2 > 0);
}

CHAIN static int fz_cmp(const void *a, const void *b)
{
	int x = *(const int *)a, y = *(const int *)b;
	return (x > y) - (x < y);
}

__attribute__((noipa)) static void survives_signals_at_random_points(void)
{
	struct sigaction sa, osa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_alarm;
	sa.sa_flags = SA_RESTART;
	sigaction(SIGALRM, &sa, &osa);
	timer_t tm;
	struct sigevent ev;
	memset(&ev, 0, sizeof ev);
	ev.sigev_notify = SIGEV_SIGNAL;
	ev.sigev_signo = SIGALRM;
	timer_create(CLOCK_MONOTONIC, &ev, &tm);
	struct itimerspec its = { { 0, 20000 }, { 0, 20000 } };
	timer_settime(tm, 0, &its, NULL);

	struct timespec t0, t;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	int v[256], w[256];
	char buf[128];
	unsigned seed = 1;
	do {
		for (int i = 0; i < 256; i++)
			v[i] = (int)(seed = seed * 1103515245u + 12345u);
		g_fz_progress = g_fz_progress + 1;
		qsort(v, 256, sizeof v[0], fz_cmp);
		g_fz_progress = g_fz_progress + 1;
		memcpy(w, v, sizeof w);
		snprintf(buf, sizeof buf, "%d %d %f", w[0], w[255], (double)w[7]);
		g_fz_progress = g_fz_progress + 1;
		realign_drap(16 + (int)(seed & 63));
		realign_arg_pointer((int)seed);
		g_fz_progress = g_fz_progress + 1;
		chain_a(&g_shot);
		g_fz_progress = g_fz_progress + 1;
		rbx_frame(rbx_leaf);
		clock_gettime(CLOCK_MONOTONIC, &t);
	} while ((t.tv_sec - t0.tv_sec) * 1000000000L + (t.tv_nsec - t0.tv_nsec) < FUZZ_NS &&
		 g_fz_n < FUZZ_MAX);

	timer_delete(tm);
	sigaction(SIGALRM, &osa, NULL);
	fprintf(stderr, "  fuzz: %d signals, %d clean, %d clean but not ending in _start\n",
		g_fz_n, g_fz_clean, g_fz_bad_end);
	for (int i = 0; i < 4 && i < g_fz_n - g_fz_clean; i++)
		dump("truncated walk", g_fz_bad[i].pcs, g_fz_bad[i].n, g_fz_bad[i].truncated);
	CHECK(g_fz_n > 100, "only %d signals arrived", g_fz_n);
	CHECK(g_fz_clean == g_fz_n, "%d of %d walks truncated", g_fz_n - g_fz_clean, g_fz_n);
	CHECK(g_fz_bad_end == 0, "%d clean walks did not end in _start", g_fz_bad_end);
	CHECK(g_fz_fp == g_fz_n, "fp walks from the handler gave no frame");
}

TEST_MAIN(CT_CASE(unwinds_a_chain_without_frame_pointers),
	  CT_CASE(finds_objects_with_dl_iterate_phdr_too),
	  CT_CASE(unwinds_through_libc_from_a_qsort_callback),
	  CT_CASE(unwinds_a_thread_to_its_start),
	  CT_CASE(stops_at_max_frames_and_says_truncated),
	  CT_CASE(takes_every_frame_from_the_cache_the_second_time),
	  CT_CASE(walks_the_same_with_the_cache_bypassed),
	  CT_CASE(gives_the_same_stacks_from_four_threads_at_once),
	  CT_CASE(unwinds_through_realigned_frames),
	  CT_CASE(unwinds_through_a_frame_whose_cfa_is_in_rbx),
	  CT_CASE(stops_at_a_return_address_in_no_object),
	  CT_CASE(walks_a_frame_pointer_chain),
	  CT_CASE(unwinds_from_a_handler_on_an_alternate_stack),
	  CT_CASE(survives_signals_at_random_points))
