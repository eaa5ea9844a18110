/* The allocator shims: the only code on the application's malloc/free path, and the
 * bootstrap that serves allocations made before the next allocator is resolved.
 *
 * Fast path, malloc: one subtract from the TLS countdown, a branch on its flags, and a tail
 * call to the real allocator (TAKE below). free: a hash, one load from the live filter,
 * and the tail call. No lock, no
 * atomic read-modify-write, no syscall, no call out of the library but the allocator.
 * Everything else (sampling, unwinding, recording) is in core.c, behind HT_UNLIKELY. */
#include <dlfcn.h>
#include <errno.h>
#include <link.h>
#include <malloc.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "altstack.h"
#include "core.h"
#include "live.h"
#include "modules.h"
#include "unwind.h"

#define HT_EXPORT __attribute__((visibility("default")))

struct real_fns {
	void *(*malloc)(size_t);
	void (*free)(void *);
	void *(*calloc)(size_t, size_t);
	void *(*realloc)(void *, size_t);
	int (*posix_memalign)(void **, size_t, size_t);
	void *(*aligned_alloc)(size_t, size_t);
	void *(*memalign)(size_t, size_t);
	void *(*valloc)(size_t);
	void *(*pvalloc)(size_t);
	size_t (*malloc_usable_size)(void *);
};
static void free_unresolved(void *p);
static int posix_memalign_fallback(void **out, size_t align, size_t n);
/* real.free and real.posix_memalign are never NULL, so free() and posix_memalign() need
 * not test them: until the next allocator is resolved they point at stubs that resolve
 * first (posix_memalign's is also the one used where the next allocator has none). */
static struct real_fns real = { .free = free_unresolved, .posix_memalign = posix_memalign_fallback };
static uint32_t real_state;   /* 0 unresolved, 1 resolving, 2 resolved */

/* glibc's own entry points: the fallback if dlsym(RTLD_NEXT) finds nothing. */
#ifdef __GLIBC__
extern void *__libc_malloc(size_t);
extern void __libc_free(void *);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);
#define LIBC_FN(f) __libc_##f
#else
/* musl exports none: dlsym(RTLD_NEXT) always finds its libc.so's malloc &c. (and, unlike
 * glibc's, its dlsym does not allocate). */
#define LIBC_FN(f) NULL
#endif

/* ---- bootstrap arena ------------------------------------------------------------------
 * dlsym() allocates (its error buffer) before we know the real allocator. Those requests,
 * and any made by other threads meanwhile, are served from this static arena; its blocks
 * are never reused, and free() ignores them. Each block is marked in the live filter, so
 * free()'s one filter test also sends it to the slow path, which recognises it: the fast
 * path needs no range check. 16-byte header: the size. */
#define BOOT_BYTES (256u * 1024u)
static uint8_t boot_arena[BOOT_BYTES] __attribute__((aligned(4096)));
static size_t boot_used;

static inline int is_boot(const void *p)
{
	return (uintptr_t)p - (uintptr_t)boot_arena < BOOT_BYTES;
}

static void *boot_alloc(size_t n, size_t align)
{
	if (align < 16)
		align = 16;
	if (align > 4096 || n > BOOT_BYTES)
		return NULL;
	size_t cur = ld_relaxed(&boot_used);
	for (;;) {
		size_t start = (cur + 16 + align - 1) & ~(align - 1);
		size_t end = start + ((n + 15) & ~(size_t)15);
		if (end > BOOT_BYTES)
			return NULL;
		if (__atomic_compare_exchange_n(&boot_used, &cur, end, 1, __ATOMIC_RELAXED,
						__ATOMIC_RELAXED)) {
			*(size_t *)(boot_arena + start - 16) = n;
			ht_live_mark(boot_arena + start);
			if (ht_g.region.hdr)
				ht_drop(&ht_g.region, HT_DROP_BOOTSTRAP);
			return boot_arena + start;
		}
	}
}

static size_t boot_size(const void *p) { return *(const size_t *)((const uint8_t *)p - 16); }

/* ---- resolving the next allocator ------------------------------------------------------ */
#define RESOLVE(f, fallback) do { \
	void *s_ = dlsym(RTLD_NEXT, #f); \
	next.f = s_ ? (__typeof__(next.f))s_ : (fallback); } while (0)

#ifndef __GLIBC__
static void *musl_calloc(size_t n, size_t m)
{
	size_t bytes = n * m;   /* calloc() checked it for overflow */
	void *p = real.malloc(bytes);
	return p ? memset(p, 0, bytes) : NULL;
}
#endif

static int resolve(void)
{
	uint32_t st = ld_acquire(&real_state);
	if (HT_LIKELY(st == 2))
		return 1;
	uint32_t z = 0;
	if (!__atomic_compare_exchange_n(&real_state, &z, 1, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
		return 0; /* another thread (or this one, re-entered from dlsym) is resolving */
	struct real_fns next;
	RESOLVE(malloc, LIBC_FN(malloc));
	RESOLVE(free, LIBC_FN(free));
	RESOLVE(calloc, LIBC_FN(calloc));
	RESOLVE(realloc, LIBC_FN(realloc));
	RESOLVE(posix_memalign, NULL);
	RESOLVE(aligned_alloc, NULL);
	RESOLVE(memalign, LIBC_FN(memalign));
	RESOLVE(valloc, NULL);
	RESOLVE(pvalloc, NULL);
	RESOLVE(malloc_usable_size, NULL);
#ifndef __GLIBC__
	/* musl's calloc calls its public malloc, and its posix_memalign, memalign and valloc
	 * its public aligned_alloc: ours, so one allocation would count twice. They are made
	 * here from its malloc and aligned_alloc instead, as musl itself makes them. */
	next.calloc = musl_calloc;
	next.memalign = next.aligned_alloc;
	next.posix_memalign = NULL;
	next.valloc = next.pvalloc = NULL;
#endif
	if (!next.posix_memalign)
		next.posix_memalign = posix_memalign_fallback;
	real = next;
	st_release(&real_state, 2);
	return 1;
}

/* ---- the shims ----------------------------------------------------------------------- */

/* The countdown test, TAKE(n, label): takes n bytes off this thread's countdown and goes
 * to label when they reach the sample point (n >= countdown before). On x86-64 that is
 * one subtract from the %fs-relative word and one branch on its flags (jbe: borrow or
 * zero), where the C form costs a load, a compare, a subtract and a store. The bytes are
 * taken on both paths, so the label's code first gives them back (GIVE_BACK), which
 * leaves the countdown as the C form leaves it.
 *
 * Between the subtract and GIVE_BACK a signal handler that allocates sees the countdown
 * wrapped to a huge value, and its bytes are taken from it; given back, the countdown
 * would then wrap the other way and this thread would never sample again. GIVE_BACK
 * catches that (a countdown above 2^63, which no drawn interval and not HT_COUNTDOWN_OFF
 * reaches) and sets it to 0: the next allocation goes to the slow path. */
#if defined(__x86_64__) && defined(__GNUC__)
#define TAKE(n, label) \
	__asm__ goto("subq %1, %0\n\tjbe %l[" #label "]" \
		     : : "m"(ht_self.countdown), "r"((uint64_t)(n)) : "cc", "memory" : label)
#else
#define TAKE(n, label) do { \
	struct ht_thread *t_ = &ht_self; \
	uint64_t c_ = t_->countdown; \
	t_->countdown = c_ - (uint64_t)(n); \
	if (HT_UNLIKELY((uint64_t)(n) >= c_)) \
		goto label; } while (0)
#endif

static inline void give_back(size_t n)
{
	struct ht_thread *t = &ht_self;
	uint64_t c = t->countdown + n;
	t->countdown = (int64_t)c < 0 ? 0 : c;
}

/* Counts an allocation of n bytes that returned p against this thread's countdown; goes
 * to the core when it reaches the sample point. */
static inline void account(void *p, size_t n)
{
	TAKE(n, slow);
	return;
slow:
	give_back(n);
	if (p)
		ht_core_alloc(p, n);
}

static HT_NOINLINE void *malloc_slow(size_t n)
{
	give_back(n);
	if (HT_UNLIKELY(!resolve()))
		return boot_alloc(n, 16);
	void *p = real.malloc(n);
	if (p)
		ht_core_alloc(p, n);
	return p;
}

HT_EXPORT void *malloc(size_t n)
{
	TAKE(n, slow);
	return real.malloc(n);
slow:
	return malloc_slow(n);
}

static void free_unresolved(void *p)
{
	/* A pointer that is neither ours nor live before the allocator is known cannot
	 * exist; if it does, leak it rather than crash. */
	if (p && resolve())
		real.free(p);
}

static HT_NOINLINE void free_slow(void *p)
{
	if (!p || is_boot(p))
		return;
	ht_core_free(p);
	real.free(p);
}

HT_EXPORT void free(void *p)
{
	/* One hash and one compare in memory: p is no live sample (nor a bootstrap block). */
	HT_LIVE_MAYBE_GOTO(p, slow);
	real.free(p);
	return;
slow:
	free_slow(p);
}

static HT_COLD void *no_memory(void)
{
	errno = ENOMEM;
	return NULL;
}

/* Out of line so that calloc's fast path needs no frame. */
static HT_NOINLINE void *calloc_slow(size_t n, size_t m, size_t bytes)
{
	give_back(bytes);
	if (HT_UNLIKELY(!resolve()))
		return boot_alloc(bytes, 16); /* static arena: already zero */
	void *p = real.calloc(n, m);
	if (p)
		ht_core_alloc(p, bytes);
	return p;
}

HT_EXPORT void *calloc(size_t n, size_t m)
{
	size_t bytes;
	if (__builtin_mul_overflow(n, m, &bytes))
		return no_memory();
	TAKE(bytes, slow);
	return real.calloc(n, m);
slow:
	return calloc_slow(n, m, bytes);
}

static HT_NOINLINE void *realloc_slow(void *p, size_t n)
{
	if (!p)
		return malloc(n);
	if (HT_UNLIKELY(is_boot(p) || !resolve())) {
		if (!resolve())
			return boot_alloc(n, 16);
		void *q = malloc(n);
		if (q) {
			size_t old = boot_size(p);
			memcpy(q, p, old < n ? old : n);
		}
		return q;
	}
	struct ht_live_entry e;
	int was_live = 0;
	if (HT_UNLIKELY(ht_live_maybe(p)))
		was_live = ht_core_take(p, &e);
	void *q = real.realloc(p, n);
	if (HT_UNLIKELY(was_live)) {
		/* glibc's realloc(p, 0) frees p and returns NULL; any other NULL leaves p. */
		if (q || n == 0)
			ht_core_count_free(&e);
		else
			ht_core_untake(p, &e);
	}
	account(q, n);
	return q;
}

/* An ordinary block whose new size reaches the sample point (TAKE took n already). */
static HT_NOINLINE void *realloc_sampled(void *p, size_t n)
{
	give_back(n);
	void *q = real.realloc(p, n);
	if (q)
		ht_core_alloc(q, n);
	return q;
}

/* The common case: p is an ordinary block (not a live sample, not a bootstrap block: the
 * filter says so), hence the allocator is resolved. The countdown is taken before the
 * call, so that the fast path ends in a tail call. */
static inline void *realloc_impl(void *p, size_t n)
{
	if (HT_UNLIKELY(!p))
		goto slow;
	HT_LIVE_MAYBE_GOTO(p, slow);
	TAKE(n, sampled);
	return real.realloc(p, n);
sampled:
	return realloc_sampled(p, n);
slow:
	return realloc_slow(p, n);
}

HT_EXPORT void *realloc(void *p, size_t n)
{
	return realloc_impl(p, n);
}

HT_EXPORT void *reallocarray(void *p, size_t n, size_t m)
{
	size_t bytes;
	if (__builtin_mul_overflow(n, m, &bytes)) {
		errno = ENOMEM;
		return NULL;
	}
	return realloc_impl(p, bytes);
}

static int memalign_common(void **out, size_t align, size_t n)
{
	if (HT_UNLIKELY(!resolve())) {
		*out = boot_alloc(n, align);
		return *out ? 0 : ENOMEM;
	}
	void *p;
	if (real.posix_memalign != posix_memalign_fallback) {
		int rc = real.posix_memalign(&p, align, n);
		if (rc)
			return rc;
	} else {
		p = real.memalign(align, n);
		if (!p)
			return ENOMEM;
	}
	*out = p;
	return 0;
}

/* posix_memalign from memalign, before the next allocator is resolved and where it has
 * none (musl: see resolve()). */
static int posix_memalign_fallback(void **out, size_t align, size_t n)
{
	if (align < sizeof(void *) || (align & (align - 1)))
		return EINVAL;
	return memalign_common(out, align, n);
}

static HT_NOINLINE int posix_memalign_slow(void **out, size_t align, size_t n)
{
	give_back(n);
	int rc = real.posix_memalign(out, align, n);
	if (rc == 0)
		account(*out, n);
	return rc;
}

/* Like malloc: the countdown is taken before the call (a call that fails with EINVAL or
 * ENOMEM has taken its bytes too, as a failed malloc does), so that the fast path is a
 * tail call; real.posix_memalign checks the alignment. */
HT_EXPORT int posix_memalign(void **out, size_t align, size_t n)
{
	TAKE(n, slow);
	return real.posix_memalign(out, align, n);
slow:
	return posix_memalign_slow(out, align, n);
}

HT_EXPORT void *aligned_alloc(size_t align, size_t n)
{
	void *p = NULL;
	if (HT_LIKELY(real_state == 2 && real.aligned_alloc))
		p = real.aligned_alloc(align, n);
	else if (align && !(align & (align - 1))) {
		int rc = memalign_common(&p, align < sizeof(void *) ? sizeof(void *) : align, n);
		if (rc) {
			errno = rc;
			p = NULL;
		}
	} else
		errno = EINVAL;
	account(p, n);
	return p;
}

HT_EXPORT void *memalign(size_t align, size_t n)
{
	void *p;
	if (HT_LIKELY(real_state == 2))
		p = real.memalign(align, n);
	else {
		size_t a = 16;
		while (a < align)
			a <<= 1;
		int rc = memalign_common(&p, a, n);
		if (rc) {
			errno = rc;
			p = NULL;
		}
	}
	account(p, n);
	return p;
}

HT_EXPORT void *valloc(size_t n)
{
	void *p;
	if (HT_LIKELY(real_state == 2 && real.valloc))
		p = real.valloc(n);
	else if (memalign_common(&p, (size_t)sysconf(_SC_PAGESIZE), n))
		p = NULL;
	account(p, n);
	return p;
}

HT_EXPORT void *pvalloc(size_t n)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	void *p;
	if (HT_LIKELY(real_state == 2 && real.pvalloc))
		p = real.pvalloc(n);
	else {
		size_t r = n ? (n + page - 1) & ~(page - 1) : page;
		if (r < n || memalign_common(&p, page, r))
			p = NULL;
	}
	account(p, n);
	return p;
}

HT_EXPORT size_t malloc_usable_size(void *p)
{
	if (!p)
		return 0;
	if (is_boot(p))
		return boot_size(p);
	if (!resolve() || !real.malloc_usable_size)
		return 0;
	return real.malloc_usable_size(p);
}

/* ---- process and thread lifecycle ---------------------------------------------------- */

/* HEAPTAP_FOLLOW_CHILDREN=0: blank this library out of LD_PRELOAD in place (no allocation,
 * same string), so programs this one execs start unprofiled. */
static int find_my_name(struct dl_phdr_info *info, size_t size, void *data)
{
	(void)size;
	uintptr_t me = (uintptr_t)&find_my_name;
	for (int i = 0; i < info->dlpi_phnum; i++) {
		const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
		uintptr_t lo = info->dlpi_addr + ph->p_vaddr;
		if (ph->p_type == PT_LOAD && me >= lo && me < lo + ph->p_memsz) {
			*(const char **)data = info->dlpi_name;
			return 1;
		}
	}
	return 0;
}

static void scrub_ld_preload(void)
{
	/* dl_iterate_phdr, not dladdr: dladdr is a GLIBC_2.34 symbol in libc (libdl before). */
	const char *path = NULL;
	dl_iterate_phdr(find_my_name, &path);
	if (!path || !*path)
		return;
	const char *me = strrchr(path, '/');
	me = me ? me + 1 : path;
	size_t mlen = strlen(me);
	extern char **environ;
	for (char **e = environ; e && *e; e++) {
		if (strncmp(*e, "LD_PRELOAD=", 11))
			continue;
		char *s = *e + 11;
		while (*s) {
			while (*s == ' ' || *s == ':')
				s++;
			char *tok = s;
			while (*s && *s != ' ' && *s != ':')
				s++;
			size_t len = (size_t)(s - tok);
			if (len >= mlen && !memcmp(s - mlen, me, mlen) &&
			    (len == mlen || s[-(long)mlen - 1] == '/'))
				memset(tok, ' ', len);
		}
	}
}

__attribute__((constructor)) static void heaptap_init(void)
{
	struct ht_thread *t = &ht_self;
	resolve();
	t->busy++;   /* dlsym, pthread_key_create and pthread_atfork may allocate */
	struct ht_config c;
	char err[256];
	ht_config_defaults(&c);
	if (ht_config_from_env(&c, err, sizeof err) < 0) {
		ht_log("%s; profiling is off", err);
		ht_core_disable();
	} else if (!c.enabled) {
		ht_core_disable();
	} else {
		if (c.warning[0])
			ht_log("%s", c.warning);
		ht_unwind_init();
		ht_alt_init();   /* without it samples run on the thread's own stack */
		ht_self_range(&ht_g.self_lo, &ht_g.self_hi);
		if (!c.follow_children)
			scrub_ld_preload();
		pthread_atfork(ht_core_fork_prepare, ht_core_fork_parent, ht_core_fork_child);
		if (ht_core_init(&c, 0, err, sizeof err) < 0) {
			ht_log("%s; profiling is off", err);
			ht_core_disable();
		}
	}
	t->busy--;
}

__attribute__((destructor)) static void heaptap_fini(void)
{
	ht_core_exit();
}
