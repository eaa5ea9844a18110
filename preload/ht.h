/* Internal definitions shared by the preload's files. Nothing here is exported. */
#ifndef HT_H
#define HT_H

#include <stddef.h>
#include <stdint.h>
#include "heaptap_region.h"

#define HT_HIDDEN      __attribute__((visibility("hidden")))
#define HT_LIKELY(x)   __builtin_expect(!!(x), 1)
#define HT_UNLIKELY(x) __builtin_expect(!!(x), 0)
#define HT_TLS         __thread __attribute__((tls_model("initial-exec")))
#define HT_NOINLINE    __attribute__((noinline))
#define HT_COLD        __attribute__((cold, noinline))

#define ld_relaxed(p)     __atomic_load_n((p), __ATOMIC_RELAXED)
#define ld_acquire(p)     __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define st_relaxed(p, v)  __atomic_store_n((p), (v), __ATOMIC_RELAXED)
#define st_release(p, v)  __atomic_store_n((p), (v), __ATOMIC_RELEASE)
#define add_relaxed(p, v) __atomic_fetch_add((p), (v), __ATOMIC_RELAXED)

/* A spinlock for rare paths (slab fold, module scan, table growth). Never held around a
 * call into the allocator or anything that can block on another thread. */
typedef struct { uint32_t v; } ht_spin_t;
static inline int ht_spin_trylock(ht_spin_t *l)
{
	uint32_t z = 0;
	return __atomic_compare_exchange_n(&l->v, &z, 1, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED);
}
static inline void ht_spin_lock(ht_spin_t *l)
{
	while (!ht_spin_trylock(l))
		while (ld_relaxed(&l->v))
			__builtin_ia32_pause();
}
static inline void ht_spin_unlock(ht_spin_t *l) { st_release(&l->v, 0); }

#define HT_MAX_DEPTH_LIMIT 256     /* frames per stack at most (HEAPTAP_MAX_DEPTH) */

/* Configuration, read once from the environment (see config.c for the variables). */
struct ht_config {
	uint64_t rate;            /* HEAPTAP_SAMPLE_RATE, bytes; 1 = exact */
	uint64_t seed;            /* HEAPTAP_SEED; 0 = derive from time, pid, address */
	uint32_t max_depth;       /* HEAPTAP_MAX_DEPTH */
	uint32_t unwinder;        /* HEAPTAP_UNWINDER: HT_UNWIND_DWARF or HT_UNWIND_FP */
	uint32_t max_stacks;      /* HEAPTAP_MAX_STACKS */
	uint32_t max_threads;     /* HEAPTAP_MAX_THREADS: slabs */
	uint32_t slab_entries;    /* HEAPTAP_SLAB_ENTRIES: stacks per slab, power of two */
	uint32_t max_modules;
	uint32_t file_mode;       /* HEAPTAP_FILE_MODE, octal */
	uint32_t max_regions;     /* HEAPTAP_MAX_REGIONS: region files in dir at most; 0 = no cap */
	int      follow_children; /* HEAPTAP_FOLLOW_CHILDREN */
	int      enabled;         /* HEAPTAP_ENABLED (0 turns everything off) */
	char     dir[256];        /* HEAPTAP_DIR */
	char     service[128];    /* HEAPTAP_SERVICE_NAME / OTEL_SERVICE_NAME */
	char     warning[160];    /* a setting ignored (its default kept), '' if none */
};

HT_HIDDEN void ht_config_defaults(struct ht_config *c);
/* Reads HEAPTAP_* variables. Returns 0, or -1 with a one-line reason in err. A setting
 * that is ignored while profiling goes on (a HEAPTAP_FILE_MODE that lets group or others
 * write) leaves its default and a one-line reason in c->warning. */
HT_HIDDEN int ht_config_from_env(struct ht_config *c, char *err, size_t errlen);

/* stderr, one line, prefixed "heaptap: ", without stdio or malloc. */
HT_HIDDEN void ht_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

HT_HIDDEN uint64_t ht_now_ns(void); /* CLOCK_REALTIME */
/* A message for errno e that needs no locale (strerror may allocate). */
HT_HIDDEN const char *ht_errstr(int e);

#endif
