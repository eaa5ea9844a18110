/* SPDX-License-Identifier: Apache-2.0 */
/*
 * heaptap region reader. See reader.h for the contract and heaptap_region.h for the layout
 * and the reader protocol this file follows.
 *
 * Conventions in this file:
 * - Geometry (section offsets, sizes, capacities) comes only from r->hdr, the copy that
 *   validate_header() checked. The mapping is used for live words and table contents.
 * - Every uint64 sum or product of values from the file is checked for overflow before use.
 * - Every shared word is loaded with __atomic_load_n: ACQUIRE where the layout says the
 *   word publishes other data (seq, slab state, entry stack id, stack flags, module state,
 *   stacks_used), RELAXED for counters and for fields published by such a word.
 */
#define _GNU_SOURCE
#include "reader.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define OPEN_FLAGS (O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY)

static const char *const drop_names[HT_DROP_COUNT] = {
	[HT_DROP_STACKS_FULL] = "stacks_full",
	[HT_DROP_FRAMES_FULL] = "frames_full",
	[HT_DROP_SLAB_FULL] = "slab_full",
	[HT_DROP_NO_SLAB] = "no_slab",
	[HT_DROP_LIVE_FULL] = "live_full",
	[HT_DROP_RECURSION] = "recursion",
	[HT_DROP_TRUNCATED] = "truncated",
	[HT_DROP_BOOTSTRAP] = "bootstrap",
	[HT_DROP_MODULES_FULL] = "modules_full",
	[HT_DROP_RESERVE_FAILED] = "reserve_failed",
	[HT_DROP_PAUSED] = "paused",
	[HT_DROP_BUSY] = "busy",
};

const char *htr_drop_name(unsigned reason)
{
	return reason < HT_DROP_COUNT ? drop_names[reason] : NULL;
}

const char *htr_state_name(unsigned state)
{
	static const char *const names[] = {"init", "running", "exited"};
	return state < sizeof names / sizeof names[0] ? names[state] : NULL;
}

const char *htr_module_state_name(unsigned s)
{
	static const char *const names[] = {"empty", "loaded", "unloaded"};
	return s < sizeof names / sizeof names[0] ? names[s] : NULL;
}

const char *htr_unwinder_name(unsigned u)
{
	static const char *const names[] = {"unknown", "dwarf", "fp"};
	return u < sizeof names / sizeof names[0] ? names[u] : NULL;
}

uint32_t htr_host_arch(void)
{
#if defined(__x86_64__)
	return 62;
#elif defined(__aarch64__)
	return 183;
#else
	return 0;
#endif
}

static int fail(struct htr_error *err, int kind, int errnum, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static int fail(struct htr_error *err, int kind, int errnum, const char *fmt, ...)
{
	if (err) {
		err->alive = -1;
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(err->msg, sizeof err->msg, fmt, ap);
		va_end(ap);
		err->kind = kind;
		err->errnum = errnum;
	}
	return -1;
}

static int fail_errno(struct htr_error *err, const char *what)
{
	int e = errno;
	return fail(err, HTR_E_IO, e, "%s: %s", what, strerror(e));
}

static void ok(struct htr_error *err)
{
	if (err) {
		err->kind = HTR_OK;
		err->errnum = 0;
		err->alive = -1;
		err->msg[0] = '\0';
	}
}

/* ---- the fault guard ----------------------------------------------------------------- */

/* A read of a mapping that the file's owner can truncate at any moment (reader.h). One
 * SIGBUS handler for the process, installed on first use; the thread that reads a mapping
 * arms a guard naming it. A fault inside the armed range jumps back to the guard; any other
 * SIGBUS goes where it went before. The handler touches only this thread's guard (an
 * initial-exec TLS pointer: no allocation in the handler) and calls only siglongjmp,
 * sigaction and raise. */
struct guard {
	sigjmp_buf jb;
	const unsigned char *lo, *hi;   /* the mapping being read */
	volatile sig_atomic_t armed;
};

static __thread struct guard *cur_guard __attribute__((tls_model("initial-exec")));
static struct sigaction prev_bus;
static pthread_once_t guard_once = PTHREAD_ONCE_INIT;
static int guard_ok;
static uintptr_t guard_page_size;

/* htr_zero_fill_begin/end (reader.h): depth of the armed windows on this thread, and the
 * pages filled in them. */
static __thread volatile sig_atomic_t zf_depth __attribute__((tls_model("initial-exec")));
static __thread volatile sig_atomic_t zf_pages __attribute__((tls_model("initial-exec")));

static void on_sigbus(int sig, siginfo_t *si, void *uc)
{
	struct guard *g = cur_guard;
	const unsigned char *a = (const unsigned char *)si->si_addr;
	if (g && g->armed && si->si_code > 0 && a >= g->lo && a < g->hi) {
		g->armed = 0;
		siglongjmp(g->jb, 1);
	}
	if (zf_depth > 0 && si->si_code == BUS_ADRERR && guard_page_size) {
		/* a module file truncated under libelf's mapping: zeros instead (reader.h) */
		void *pg = (void *)((uintptr_t)a & ~(guard_page_size - 1));
		if (mmap(pg, guard_page_size, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) !=
		    MAP_FAILED) {
			zf_pages++;
			return;
		}
	}
	/* not a fault of ours: as if we had never been installed */
	if (prev_bus.sa_flags & SA_SIGINFO) {
		if (prev_bus.sa_sigaction) {
			prev_bus.sa_sigaction(sig, si, uc);
			return;
		}
	} else if (prev_bus.sa_handler != SIG_DFL && prev_bus.sa_handler != SIG_IGN) {
		prev_bus.sa_handler(sig);
		return;
	}
	/* SIG_DFL (or SIG_IGN, which a fault ignores anyway): the default action. A fault
	 * re-executes the access and dies of it; a sent signal is raised again. */
	struct sigaction dfl;
	memset(&dfl, 0, sizeof dfl);
	dfl.sa_handler = SIG_DFL;
	sigaction(SIGBUS, &dfl, NULL);
	if (si->si_code <= 0)
		raise(sig);
}

static void guard_install(void)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	long ps = sysconf(_SC_PAGESIZE);
	guard_page_size = ps > 0 ? (uintptr_t)ps : 4096;
	sa.sa_sigaction = on_sigbus;
	sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
	sigemptyset(&sa.sa_mask);
	guard_ok = sigaction(SIGBUS, &sa, &prev_bus) == 0;
}

void htr_zero_fill_begin(void)
{
	pthread_once(&guard_once, guard_install);
	if (zf_depth++ == 0)
		zf_pages = 0;
}

unsigned htr_zero_fill_end(void)
{
	unsigned n = (unsigned)zf_pages;
	if (zf_depth > 0 && --zf_depth == 0)
		zf_pages = 0;
	return n;
}

/* A compiler barrier after a pointer to allocated memory is stored where the fault path
 * frees it: the store must not sink below a later load of the mapping that may fault. */
#define KEEP() __asm__ __volatile__("" ::: "memory")

/* Runs fn(arg) with loads from [lo, lo + len) guarded. Returns fn's result, or 1 when a
 * load faulted (fn's own results are 0 or -1). */
static int guarded(const unsigned char *lo, uint64_t len, int (*fn)(void *), void *arg)
{
	pthread_once(&guard_once, guard_install);
	if (!guard_ok)
		return fn(arg); /* no handler: as before */
	struct guard g;
	struct guard *outer = cur_guard;
	g.lo = lo;
	g.hi = lo + len;
	g.armed = 0;
	cur_guard = &g;
	if (sigsetjmp(g.jb, 1)) {
		cur_guard = outer;
		return 1;
	}
	g.armed = 1;
	int rc = fn(arg);
	g.armed = 0;
	cur_guard = outer;
	return rc;
}

static int fail_changed(struct htr_error *err)
{
	return fail(err, HTR_E_CHANGED, 0,
		    "the file shrank while it was being read (its writer truncated it)");
}

/* ---- the data cap ------------------------------------------------------------------- */

static uint64_t max_data;
static pthread_once_t max_data_once = PTHREAD_ONCE_INIT;

static void max_data_init(void)
{
	max_data = HTR_MAX_DATA_BYTES;
	const char *v = getenv("HEAPTAP_MAX_REGION_BYTES");
	if (v && *v) {
		char *end;
		errno = 0;
		unsigned long long n = strtoull(v, &end, 10);
		if (errno == 0 && *end == '\0' && n >= (1ull << 20))
			max_data = n;
	}
}

uint64_t htr_max_data_bytes(void)
{
	pthread_once(&max_data_once, max_data_init);
	return max_data;
}

static int check_data(const struct stat *st, struct htr_error *err)
{
	uint64_t data = (uint64_t)st->st_blocks * 512;
	uint64_t cap = htr_max_data_bytes();
	if (data > cap)
		return fail(err, HTR_E_LIMIT, 0,
			    "file holds %llu bytes of data, more than the reader's limit of %llu "
			    "(HEAPTAP_MAX_REGION_BYTES)",
			    (unsigned long long)data, (unsigned long long)cap);
	return 0;
}

/* ---- atomic loads from the mapping ------------------------------------------------- */

static inline uint64_t ld64(const unsigned char *p)
{
	return __atomic_load_n((const uint64_t *)(const void *)p, __ATOMIC_RELAXED);
}

static inline uint32_t ld32(const unsigned char *p)
{
	return __atomic_load_n((const uint32_t *)(const void *)p, __ATOMIC_RELAXED);
}

static inline uint32_t ld32_acq(const unsigned char *p)
{
	return __atomic_load_n((const uint32_t *)(const void *)p, __ATOMIC_ACQUIRE);
}

static inline uint64_t ld64_acq(const unsigned char *p)
{
	return __atomic_load_n((const uint64_t *)(const void *)p, __ATOMIC_ACQUIRE);
}

#define HDR_FIELD(map, field) ((map) + offsetof(struct ht_header, field))

static inline uint64_t add_sat(uint64_t a, uint64_t b)
{
	uint64_t s;
	return __builtin_add_overflow(a, b, &s) ? UINT64_MAX : s;
}

static inline int is_pow2(uint64_t v)
{
	return v != 0 && (v & (v - 1)) == 0;
}

/* ---- header validation -------------------------------------------------------------- */

struct named_section {
	const char *name;
	const struct ht_section *s;
};

static int check_section(const char *name, const struct ht_section *s, uint64_t file_bytes,
			 struct htr_error *err)
{
	uint64_t end;
	if (s->offset % HT_SECTION_ALIGN != 0)
		return fail(err, HTR_E_FORMAT, 0,
			    "%s section offset %llu is not %u-byte aligned", name,
			    (unsigned long long)s->offset, HT_SECTION_ALIGN);
	if (s->offset < HT_HEADER_BYTES)
		return fail(err, HTR_E_FORMAT, 0,
			    "%s section offset %llu lies inside the header (first %u bytes)", name,
			    (unsigned long long)s->offset, HT_HEADER_BYTES);
	if (__builtin_add_overflow(s->offset, s->bytes, &end) || end > file_bytes)
		return fail(err, HTR_E_FORMAT, 0,
			    "%s section [%llu, %llu+%llu) extends past end of file (size %llu)",
			    name, (unsigned long long)s->offset, (unsigned long long)s->offset,
			    (unsigned long long)s->bytes, (unsigned long long)file_bytes);
	/* capacity and entry_bytes are uint32: the product fits in uint64 */
	if ((uint64_t)s->capacity * s->entry_bytes > s->bytes)
		return fail(err, HTR_E_FORMAT, 0,
			    "%s section: capacity %u x entry_bytes %u exceeds its %llu bytes", name,
			    s->capacity, s->entry_bytes, (unsigned long long)s->bytes);
	return 0;
}

static int check_entry_bytes(const char *name, const struct ht_section *s, uint32_t want,
			     struct htr_error *err)
{
	if (s->entry_bytes != want)
		return fail(err, HTR_E_FORMAT, 0, "%s section entry_bytes is %u, expected %u", name,
			    s->entry_bytes, want);
	return 0;
}

/* Checks the identity words (magic, version) of a header copy. */
static int check_identity(const struct ht_header *h, struct htr_error *err)
{
	if (h->magic != HT_MAGIC)
		return fail(err, HTR_E_FORMAT, 0, "not a heaptap region (magic 0x%016llx)",
			    (unsigned long long)h->magic);
	if (h->version > HT_LAYOUT_VERSION)
		return fail(err, HTR_E_VERSION, 0,
			    "region has newer layout version %u; this reader knows version %u "
			    "(upgrade the heaptap sidecar)",
			    h->version, HT_LAYOUT_VERSION);
	if (h->version != HT_LAYOUT_VERSION)
		return fail(err, HTR_E_VERSION, 0,
			    "region has unsupported layout version %u; this reader knows version %u",
			    h->version, HT_LAYOUT_VERSION);
	return 0;
}

static int validate_header(const struct ht_header *h, uint64_t st_size, struct htr_error *err)
{
	if (check_identity(h, err))
		return -1;
	if (h->header_bytes != HT_HEADER_BYTES)
		return fail(err, HTR_E_FORMAT, 0, "header_bytes is %u, expected %u",
			    h->header_bytes, HT_HEADER_BYTES);
	if (h->file_bytes > st_size)
		return fail(err, HTR_E_FORMAT, 0,
			    "header says the file is %llu bytes but it is only %llu bytes",
			    (unsigned long long)h->file_bytes, (unsigned long long)st_size);
	if (h->file_bytes < HT_HEADER_BYTES)
		return fail(err, HTR_E_FORMAT, 0, "file_bytes %llu is smaller than the header (%u)",
			    (unsigned long long)h->file_bytes, HT_HEADER_BYTES);
	if (h->arch != htr_host_arch())
		return fail(err, HTR_E_FORMAT, 0,
			    "region was written for ELF machine %u, this reader runs on %u", h->arch,
			    htr_host_arch());
	if (h->max_depth > HTR_MAX_DEPTH)
		return fail(err, HTR_E_FORMAT, 0, "max_depth %u exceeds the reader's limit %u",
			    h->max_depth, HTR_MAX_DEPTH);
	if (!is_pow2(h->slab_entries))
		return fail(err, HTR_E_FORMAT, 0, "slab_entries %u is not a power of two",
			    h->slab_entries);

	/* The sections of layout 1.0, then those a feature bit adds (a region without the bit
	 * has zeros, or anything, there: not looked at). Unknown feature bits are ignored:
	 * they cover only what this reader does not read. */
	struct named_section secs[9] = {
		{"modules", &h->modules}, {"paths", &h->paths},   {"stack_index", &h->stack_index},
		{"stacks", &h->stacks},   {"frames", &h->frames}, {"shared", &h->shared},
		{"slabs", &h->slabs},
	};
	size_t NSECS = 7;
	if (h->features & HT_FEATURE_PEAK)
		secs[NSECS++] = (struct named_section){"shared_peak", &h->shared_peak};
	if (h->features & HT_FEATURE_TIMELINE)
		secs[NSECS++] = (struct named_section){"timeline", &h->timeline};
	for (size_t i = 0; i < NSECS; i++)
		if (check_section(secs[i].name, secs[i].s, h->file_bytes, err))
			return -1;

	if (check_entry_bytes("modules", &h->modules, sizeof(struct ht_module), err) ||
	    check_entry_bytes("paths", &h->paths, 1, err) ||
	    check_entry_bytes("stack_index", &h->stack_index, sizeof(uint32_t), err) ||
	    check_entry_bytes("stacks", &h->stacks, sizeof(struct ht_stack), err) ||
	    check_entry_bytes("frames", &h->frames, sizeof(uint64_t), err) ||
	    check_entry_bytes("shared", &h->shared, sizeof(struct ht_counters), err))
		return -1;
	if (!is_pow2(h->stack_index.capacity))
		return fail(err, HTR_E_FORMAT, 0, "stack_index capacity %u is not a power of two",
			    h->stack_index.capacity);
	if (h->stacks.capacity < HT_STACK_FIRST)
		return fail(err, HTR_E_FORMAT, 0,
			    "stacks capacity %u leaves no room for the reserved ids 0 and 1",
			    h->stacks.capacity);
	if (h->features & HT_FEATURE_PEAK) {
		if (check_entry_bytes("shared_peak", &h->shared_peak, sizeof(struct ht_peak), err))
			return -1;
		if (h->shared_peak.capacity < h->shared.capacity)
			return fail(err, HTR_E_FORMAT, 0,
				    "shared_peak capacity %u is smaller than the shared table's %u",
				    h->shared_peak.capacity, h->shared.capacity);
	}
	if (h->features & HT_FEATURE_TIMELINE) {
		if (check_entry_bytes("timeline", &h->timeline, sizeof(struct ht_timeline_point), err))
			return -1;
		if (h->timeline.capacity == 0)
			return fail(err, HTR_E_FORMAT, 0, "timeline capacity is 0");
	}
	/* With HT_FEATURE_PEAK a slab's entries are followed by one struct ht_peak each. */
	uint64_t per_entry = sizeof(struct ht_slab_entry) +
			     ((h->features & HT_FEATURE_PEAK) ? sizeof(struct ht_peak) : 0);
	uint64_t slab_min = sizeof(struct ht_slab_header) + (uint64_t)h->slab_entries * per_entry;
	if (h->slabs.entry_bytes < slab_min)
		return fail(err, HTR_E_FORMAT, 0,
			    "slabs entry_bytes %u is smaller than a slab of %u entries (%llu bytes)",
			    h->slabs.entry_bytes, h->slab_entries, (unsigned long long)slab_min);
	if (h->slabs.entry_bytes % 8 != 0)
		return fail(err, HTR_E_FORMAT, 0, "slabs entry_bytes %u is not a multiple of 8",
			    h->slabs.entry_bytes);

	/* No two sections may share a byte. Sort by offset (at most 9 items) and compare
	 * neighbours; empty sections cannot overlap anything. */
	struct named_section sorted[9];
	size_t n = 0;
	for (size_t i = 0; i < NSECS; i++) {
		if (secs[i].s->bytes == 0)
			continue;
		size_t j = n++;
		while (j > 0 && sorted[j - 1].s->offset > secs[i].s->offset) {
			sorted[j] = sorted[j - 1];
			j--;
		}
		sorted[j] = secs[i];
	}
	for (size_t i = 1; i < n; i++) {
		const struct ht_section *a = sorted[i - 1].s, *b = sorted[i].s;
		if (a->offset + a->bytes > b->offset) /* no overflow: checked above */
			return fail(err, HTR_E_FORMAT, 0,
				    "%s section [%llu, %llu) overlaps %s section [%llu, %llu)",
				    sorted[i - 1].name, (unsigned long long)a->offset,
				    (unsigned long long)(a->offset + a->bytes), sorted[i].name,
				    (unsigned long long)b->offset,
				    (unsigned long long)(b->offset + b->bytes));
	}
	return 0;
}

/* ---- open / close ------------------------------------------------------------------- */

static int open_file(const char *path, int flags, struct stat *st, struct htr_error *err)
{
	int fd = open(path, flags | OPEN_FLAGS);
	if (fd < 0) {
		int e = errno;
		if (e == ELOOP)
			return fail(err, HTR_E_IO, e, "is a symbolic link (regions are not followed "
						      "through links)");
		return fail(err, HTR_E_IO, e, "open: %s", strerror(e));
	}
	if (fstat(fd, st) != 0) {
		int rc = fail_errno(err, "fstat");
		close(fd);
		return rc;
	}
	if (!S_ISREG(st->st_mode)) {
		close(fd);
		return fail(err, HTR_E_IO, S_ISDIR(st->st_mode) ? EISDIR : EINVAL, "%s",
			    S_ISDIR(st->st_mode) ? "is a directory, not a region file"
						 : "is not a regular file");
	}
	if ((uint64_t)st->st_size < HT_HEADER_BYTES) {
		close(fd);
		return fail(err, HTR_E_FORMAT, 0,
			    "file is %llu bytes, smaller than a region header (%u bytes)",
			    (unsigned long long)st->st_size, HT_HEADER_BYTES);
	}
	if ((uint64_t)st->st_size > HTR_MAX_FILE_BYTES) {
		close(fd);
		return fail(err, HTR_E_FORMAT, 0,
			    "file is %llu bytes, larger than the reader's limit (%llu bytes)",
			    (unsigned long long)st->st_size, (unsigned long long)HTR_MAX_FILE_BYTES);
	}
	return fd;
}

struct open_ctx {
	struct htr_region *r;
	const char *path;
	struct htr_error *err;
};

/* The part of htr_open that reads the mapping (under the guard). */
static int open_body(void *arg)
{
	struct open_ctx *c = arg;
	struct htr_region *r = c->r;
	struct htr_error *err = c->err;
	/* Identity first, so that a stray file says "not a region" rather than "not ready". */
	struct ht_header id;
	memcpy(&id, r->map, offsetof(struct ht_header, flags));
	if (check_identity(&id, err))
		return -1;
	/* RUNNING is stored with release after setup: acquire it before copying the rest. */
	uint32_t state = ld32_acq(HDR_FIELD(r->map, state));
	if (state == HT_STATE_INIT) {
		int alive = -1;
		if (htr_alive(r, c->path, &alive, NULL) != 0)
			alive = -1;
		fail(err, HTR_E_NOT_READY, 0, "region is still being set up (state INIT)%s",
		     alive == 0 ? "; no writer holds it" : "");
		if (err)
			err->alive = alive;
		return -1;
	}
	memcpy(&r->hdr, r->map, sizeof r->hdr);
	return validate_header(&r->hdr, r->map_bytes, err);
}

int htr_open(struct htr_region *r, const char *path, struct htr_error *err)
{
	struct stat st;
	memset(r, 0, sizeof *r);
	r->fd = -1;
	if (!path || !*path)
		return fail(err, HTR_E_ARG, 0, "empty path");
	int fd = open_file(path, O_RDONLY, &st, err);
	if (fd < 0)
		return -1;
	if (check_data(&st, err)) {
		close(fd);
		return -1;
	}
	uint64_t size = (uint64_t)st.st_size;
	void *m = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0);
	if (m == MAP_FAILED) {
		int rc = fail_errno(err, "mmap");
		close(fd);
		return rc;
	}
	r->fd = fd;
	r->map = m;
	r->map_bytes = size;
	r->dev = st.st_dev;
	r->ino = st.st_ino;
	struct open_ctx c = {r, path, err};
	int rc = guarded(r->map, r->map_bytes, open_body, &c);
	if (rc == 1)
		fail_changed(err);
	if (rc != 0) {
		htr_close(r);
		return -1;
	}
	ok(err);
	return 0;
}

void htr_close(struct htr_region *r)
{
	if (r->map)
		munmap((void *)r->map, r->map_bytes);
	if (r->fd >= 0)
		close(r->fd);
	r->map = NULL;
	r->map_bytes = 0;
	r->fd = -1;
}

void htr_header_strings(const struct ht_header *h, struct htr_strings *out)
{
	/* The fields are fixed-size and need not hold a NUL: copy at most size - 1 bytes. */
	memcpy(out->exe, h->exe, sizeof out->exe - 1);
	out->exe[sizeof out->exe - 1] = '\0';
	memcpy(out->cmdline, h->cmdline, sizeof out->cmdline - 1);
	out->cmdline[sizeof out->cmdline - 1] = '\0';
	memcpy(out->service, h->service, sizeof out->service - 1);
	out->service[sizeof out->service - 1] = '\0';
}

/* The live words; the control page's only if ctl (it may be a hole: zeros). */
static void read_live(const struct htr_region *r, int ctl, struct htr_live *o)
{
	const unsigned char *m = r->map;
	const unsigned char *c = m + HT_CONTROL_OFFSET;
	o->state = ld32_acq(HDR_FIELD(m, state));
	o->paused_now = ld32(HDR_FIELD(m, paused_now));
	o->exit_ns = ld64(HDR_FIELD(m, exit_ns));
	o->heartbeat_ns = ld64(HDR_FIELD(m, heartbeat_ns));
	o->rate_now = ld64(HDR_FIELD(m, rate_now));
	o->seq = ld64_acq(HDR_FIELD(m, seq));
	o->stacks_used = ld32_acq(HDR_FIELD(m, stacks_used));
	o->modules_used = ld32_acq(HDR_FIELD(m, modules_used));
	o->frames_used = ld64(HDR_FIELD(m, frames_used));
	o->paths_used = ld64(HDR_FIELD(m, paths_used));
	o->threads_seen = ld64(HDR_FIELD(m, threads_seen));
	o->slab_folds = ld64(HDR_FIELD(m, slab_folds));
	for (unsigned i = 0; i < HT_DROP_SLOTS; i++)
		o->drops[i] = ld64(HDR_FIELD(m, drops) + i * sizeof(uint64_t));
	uint32_t f = r->hdr.features; /* the validated copy: a later rewrite cannot turn bits on */
	o->inuse_bytes = (f & HT_FEATURE_PEAK) ? (int64_t)ld64(HDR_FIELD(m, inuse_bytes)) : 0;
	o->alloc_bytes = (f & HT_FEATURE_PEAK) ? ld64(HDR_FIELD(m, alloc_bytes)) : 0;
	o->timeline_next = (f & HT_FEATURE_TIMELINE) ? ld64_acq(HDR_FIELD(m, timeline_next)) : 0;
	if (!ctl)
		return;
	o->control_paused = ld32_acq(c + offsetof(struct ht_control, paused));
	o->control_rate = ld64(c + offsetof(struct ht_control, rate));
	o->control_seq = ld64(c + offsetof(struct ht_control, seq));
}

struct live_ctx {
	const struct htr_region *r;
	struct htr_live *o;
};

static int live_body(void *arg)
{
	struct live_ctx *c = arg;
	read_live(c->r, 1, c->o);
	return 0;
}

void htr_read_live(const struct htr_region *r, struct htr_live *o)
{
	memset(o, 0, sizeof *o);
	struct live_ctx c = {r, o};
	if (guarded(r->map, r->map_bytes, live_body, &c) != 0)
		memset(o, 0, sizeof *o); /* the file shrank: nothing to say */
}

int htr_alive(const struct htr_region *r, const char *path, int *alive, struct htr_error *err)
{
	struct stat st;
	int fd = open(path, O_RDONLY | OPEN_FLAGS);
	if (fd < 0)
		return fail_errno(err, "open (liveness)");
	if (fstat(fd, &st) != 0) {
		int rc = fail_errno(err, "fstat (liveness)");
		close(fd);
		return rc;
	}
	if (st.st_dev != r->dev || st.st_ino != r->ino) {
		close(fd);
		return fail(err, HTR_E_IO, ESTALE, "file was replaced while it was being read");
	}
	int rc = 0;
	for (int tries = 0;; tries++) {
		if (flock(fd, LOCK_EX | LOCK_NB) == 0) {
			/* Nobody holds it: the writer is gone. Let go at once so that we never
			 * stand in the way of anyone else's lock. */
			flock(fd, LOCK_UN);
			*alive = 0;
			break;
		}
		if (errno == EWOULDBLOCK) {
			*alive = 1;
			break;
		}
		if (errno != EINTR || tries >= 10) {
			rc = fail_errno(err, "flock (liveness)");
			break;
		}
	}
	close(fd);
	return rc;
}

/* ---- snapshot ----------------------------------------------------------------------- */

/* Per-stack sums while a snapshot is taken: an open-addressed table keyed by stack id, so
 * that memory follows the ids that actually carry counts, not a capacity from the file. */
struct acc_slot {
	uint32_t id;              /* 0: empty */
	uint32_t pad;
	struct ht_counters c;
	int64_t peak_bytes;       /* in use at the peak, summed over rows (may be < 0) */
	int64_t peak_objects;
};

struct acc {
	struct acc_slot *slots;
	uint32_t mask;            /* slots - 1; 0 before the first insert */
	uint32_t count;
};

static int acc_grow(struct acc *a)
{
	uint64_t n = a->slots ? ((uint64_t)a->mask + 1) * 2 : 256;
	if (n > (1ull << 31))
		return -1;
	struct acc_slot *p = calloc(n, sizeof *p);
	if (!p)
		return -1;
	uint32_t mask = (uint32_t)(n - 1);
	if (a->slots) {
		for (uint64_t i = 0; i <= a->mask; i++) {
			if (!a->slots[i].id)
				continue;
			uint32_t j = (a->slots[i].id * 0x9E3779B1u) & mask;
			while (p[j].id)
				j = (j + 1) & mask;
			p[j] = a->slots[i];
		}
		free(a->slots);
	}
	a->slots = p;
	a->mask = mask;
	KEEP();
	return 0;
}

/* The totals row of id (!= 0), made zero on first use; NULL when out of memory. */
static struct acc_slot *acc_row(struct acc *a, uint32_t id)
{
	if (!a->slots || (uint64_t)(a->count + 1) * 2 > (uint64_t)a->mask + 1)
		if (acc_grow(a))
			return NULL;
	/* load stays below 1/2, so the probe ends */
	uint32_t j = (id * 0x9E3779B1u) & a->mask;
	while (a->slots[j].id && a->slots[j].id != id)
		j = (j + 1) & a->mask;
	if (!a->slots[j].id) {
		a->slots[j].id = id;
		a->count++;
	}
	return &a->slots[j];
}

static void acc_clear(struct acc *a)
{
	if (a->slots)
		memset(a->slots, 0, ((size_t)a->mask + 1) * sizeof *a->slots);
	a->count = 0;
}

static int cmp_slot_id(const void *x, const void *y)
{
	uint32_t a = ((const struct acc_slot *)x)->id, b = ((const struct acc_slot *)y)->id;
	return (a > b) - (a < b);
}

static void add_counters(struct ht_counters *to, const unsigned char *c)
{
	to->alloc_objects = add_sat(to->alloc_objects, ld64(c + offsetof(struct ht_counters, alloc_objects)));
	to->alloc_bytes = add_sat(to->alloc_bytes, ld64(c + offsetof(struct ht_counters, alloc_bytes)));
	to->free_objects = add_sat(to->free_objects, ld64(c + offsetof(struct ht_counters, free_objects)));
	to->free_bytes = add_sat(to->free_bytes, ld64(c + offsetof(struct ht_counters, free_bytes)));
	to->samples = add_sat(to->samples, ld64(c + offsetof(struct ht_counters, samples)));
}

static inline int64_t add_sat_i64(int64_t a, int64_t b)
{
	int64_t s;
	if (!__builtin_add_overflow(a, b, &s))
		return s;
	return b > 0 ? INT64_MAX : INT64_MIN;
}

static inline uint64_t sub_clamp(uint64_t a, uint64_t b)
{
	return a > b ? a - b : 0;
}

static int counters_nonzero(const struct ht_counters *c)
{
	return (c->alloc_objects | c->alloc_bytes | c->free_objects | c->free_bytes | c->samples) != 0;
}

static void note_malformed(struct htr_snapshot *s, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void note_malformed(struct htr_snapshot *s, const char *fmt, ...)
{
	if (s->malformed++ == 0) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(s->first_malformed, sizeof s->first_malformed, fmt, ap);
		va_end(ap);
	}
}

static inline uint32_t clamp_u32(uint32_t v, uint32_t cap)
{
	return v < cap ? v : cap;
}

static void backoff(unsigned attempt)
{
	long ns = 20000L << (attempt < 6 ? attempt : 6);
	if (ns > 1000000L)
		ns = 1000000L;
	struct timespec ts = {0, ns};
	nanosleep(&ts, NULL);
}

/* Pages of [off, off + len) of the file that hold data, as a bitmap (bit i: the page at
 * off + i * HT_SECTION_ALIGN; off is section-aligned). The region file is sparse and the
 * writer reserves parts as it starts to use them; on tmpfs a read fault on a hole
 * allocates a page (and raises SIGBUS when the file system is full), so the reader must not
 * touch holes. A hole reads as zeros, so skipping it is exact: a slab whose header page is
 * a hole is FREE, an entry on a hole page is empty. Returns NULL when every page should be
 * taken as data (no memory; lseek cannot tell). */
static uint8_t *data_pages(int fd, uint64_t off, uint64_t len)
{
	uint64_t pages = (len + HT_SECTION_ALIGN - 1) / HT_SECTION_ALIGN;
	if (pages == 0)
		return NULL;
	uint8_t *map = calloc((pages + 7) / 8, 1);
	if (!map)
		return NULL;
	uint64_t end = off + len, pos = off;
	/* each round moves pos past at least one page, so pages + 1 rounds suffice */
	for (uint64_t round = 0; pos < end && round <= pages; round++) {
		off_t d = lseek(fd, (off_t)pos, SEEK_DATA);
		if (d < 0) {
			if (errno == ENXIO)
				break; /* no data from pos to the end of the file */
			free(map);
			return NULL;
		}
		if ((uint64_t)d >= end)
			break;
		off_t hole = lseek(fd, d, SEEK_HOLE);
		uint64_t h = hole < 0 || (uint64_t)hole > end ? end : (uint64_t)hole;
		if (h <= (uint64_t)d) {
			free(map);
			return NULL; /* the file system contradicts itself: read everything */
		}
		for (uint64_t pg = ((uint64_t)d - off) / HT_SECTION_ALIGN;
		     pg < pages && off + pg * HT_SECTION_ALIGN < h; pg++)
			map[pg / 8] |= (uint8_t)(1u << (pg % 8));
		pos = h;
	}
	return map;
}

/* Which pages of the whole file hold data, found once per snapshot (data_pages). A page
 * that turns into data while we read held zeros when we looked, as if it was read early; a
 * page that turns into a hole after we looked (only a hostile writer punches holes) costs
 * at most the pages we saw as data. */
struct pages {
	uint8_t *bits;            /* NULL: take every page as data */
	uint64_t n;               /* pages covered */
	uint8_t *asked;           /* pages looked at again by has_now (NULL until then) */
	int fd;
};

static void pages_scan(struct pages *pg, int fd, uint64_t file_bytes)
{
	pg->n = (file_bytes + HT_SECTION_ALIGN - 1) / HT_SECTION_ALIGN;
	pg->fd = fd;
	pg->asked = NULL;
	pg->bits = data_pages(fd, 0, file_bytes);
}

/* 1 if every page of [off, off + len) holds data (len 0: the page at off). */
static inline int has(const struct pages *pg, uint64_t off, uint64_t len)
{
	uint64_t first = off / HT_SECTION_ALIGN;
	uint64_t last = (off + (len ? len - 1 : 0)) / HT_SECTION_ALIGN;
	if (last >= pg->n || last < first)
		return 0;
	if (!pg->bits)
		return 1;
	for (uint64_t p = first; p <= last; p++)
		if (!((pg->bits[p / 8] >> (p % 8)) & 1))
			return 0;
	return 1;
}

/* has(), for what the writer must have written before something we have already seen
 * published (the record of an id that has counts, the frames of a READY record, the path
 * of a published module): a page that was a hole when we looked may have been reserved
 * and written since, so each such page is asked about again, once per snapshot. */
static int has_now(struct pages *pg, uint64_t off, uint64_t len)
{
	if (has(pg, off, len))
		return 1;
	uint64_t first = off / HT_SECTION_ALIGN;
	uint64_t last = (off + (len ? len - 1 : 0)) / HT_SECTION_ALIGN;
	if (!pg->bits || last >= pg->n || last < first)
		return 0;
	if (!pg->asked) {
		pg->asked = calloc((pg->n + 7) / 8, 1);
		KEEP();
		if (!pg->asked)
			return 0;
	}
	for (uint64_t p = first; p <= last; p++) {
		if ((pg->bits[p / 8] >> (p % 8)) & 1)
			continue;
		if ((pg->asked[p / 8] >> (p % 8)) & 1)
			return 0; /* asked already: a hole */
		pg->asked[p / 8] |= (uint8_t)(1u << (p % 8));
		off_t d = lseek(pg->fd, (off_t)(p * HT_SECTION_ALIGN), SEEK_DATA);
		if (d < 0 || (uint64_t)d != p * HT_SECTION_ALIGN)
			return 0;
		pg->bits[p / 8] |= (uint8_t)(1u << (p % 8));
	}
	return 1;
}

/* The first index >= i + 1 of a table at base (entries of size es) whose entry starts on a
 * later page than entry i: where a scan that found entry i's first page a hole goes next. */
static inline uint64_t past_page(uint64_t base, uint64_t es, uint64_t i)
{
	uint64_t next = ((base + i * es) / HT_SECTION_ALIGN + 1) * HT_SECTION_ALIGN;
	uint64_t j = (next - base + es - 1) / es;
	return j > i ? j : i + 1;
}

/* A row's in-use at the peak of generation gen (struct ht_peak in heaptap_region.h): its
 * ht_peak values if their gen is gen, else what the row holds now (c, as this pass read
 * it, before pk's gen: a row the writer touches brings its ht_peak up to date first, so a
 * reader that sees the new counts sees the new gen too). pk NULL: the row's ht_peak lies
 * on a hole (zeros). Sets *moved when the ht_peak changed while it was read. */
static void row_peak(const unsigned char *pk, uint64_t gen, const struct ht_counters *c,
		     int64_t *bytes, int64_t *objects, int *moved)
{
	__atomic_thread_fence(__ATOMIC_ACQUIRE); /* the row's counters were loaded before */
	uint64_t g = pk ? ld64_acq(pk + offsetof(struct ht_peak, gen)) : 0;
	if (pk && g == gen) {
		*bytes = (int64_t)ld64(pk + offsetof(struct ht_peak, bytes));
		*objects = (int64_t)ld64(pk + offsetof(struct ht_peak, objects));
		__atomic_thread_fence(__ATOMIC_ACQUIRE);
		if (ld64(pk + offsetof(struct ht_peak, gen)) != g)
			*moved = 1;
		return;
	}
	if (!pk && gen == 0) { /* a hole holds gen 0 and zeros */
		*bytes = *objects = 0;
		return;
	}
	*bytes = (int64_t)(c->alloc_bytes - c->free_bytes);
	*objects = (int64_t)(c->alloc_objects - c->free_objects);
}

static void acc_add(struct acc_slot *t, const struct ht_counters *row)
{
	t->c.alloc_objects = add_sat(t->c.alloc_objects, row->alloc_objects);
	t->c.alloc_bytes = add_sat(t->c.alloc_bytes, row->alloc_bytes);
	t->c.free_objects = add_sat(t->c.free_objects, row->free_objects);
	t->c.free_bytes = add_sat(t->c.free_bytes, row->free_bytes);
	t->c.samples = add_sat(t->c.samples, row->samples);
}

/* Steps 1-4 of the reader protocol. On success `a` holds the totals of every id that had
 * counts (and, with HT_FEATURE_PEAK, their in-use at the peak of s->peak.gen), and
 * *used_after is stacks_used (clamped) as loaded after the consistent pass. */
static int sum_counters(const struct htr_region *r, const struct pages *pg, struct acc *a,
			struct htr_snapshot *s, uint32_t *used_after, struct htr_error *err)
{
	const struct ht_header *h = &r->hdr;
	const unsigned char *m = r->map;
	const unsigned char *seqp = HDR_FIELD(m, seq);
	const unsigned char *usedp = HDR_FIELD(m, stacks_used);
	const unsigned char *genp = HDR_FIELD(m, peak_gen);
	const int peak = (h->features & HT_FEATURE_PEAK) != 0;
	/* a slab's ht_peak rows follow its entries (validated: inside entry_bytes) */
	const uint64_t peaks_at = sizeof(struct ht_slab_header) +
				  (uint64_t)h->slab_entries * sizeof(struct ht_slab_entry);
	unsigned peak_moves = 0;
	int odd = 0;

	for (unsigned attempt = 0;; attempt++) {
		if (attempt > 0) {
			if (attempt >= HTR_MAX_ATTEMPTS)
				return fail(err, HTR_E_BUSY, 0,
					    "region busy: %s for %u attempts",
					    odd ? "a slab fold stayed under way (seq odd)"
						: "seq kept changing",
					    HTR_MAX_ATTEMPTS);
			s->retries++;
			backoff(attempt);
		}
		/* 1. an odd sequence means a fold is under way */
		uint64_t s1 = ld64_acq(seqp);
		odd = (s1 & 1) != 0;
		if (odd)
			continue;
		s->malformed = 0;
		s->first_malformed[0] = '\0';
		acc_clear(a);
		/* the peak this pass reads the rows against: gen first (it is bumped last) */
		uint64_t g1 = 0, pbytes = 0, pns = 0;
		int moved = 0;
		if (peak) {
			g1 = ld64_acq(genp);
			pbytes = ld64(HDR_FIELD(m, peak_bytes));
			pns = ld64(HDR_FIELD(m, peak_ns));
		}

		/* 2. every ACTIVE or RETIRED slab, every published entry */
		const unsigned char *slabs = m + h->slabs.offset;
		for (uint32_t i = 0; i < h->slabs.capacity; i++) {
			uint64_t rel = (uint64_t)i * h->slabs.entry_bytes;
			const unsigned char *slab = slabs + rel;
			if (!has(pg, h->slabs.offset + rel, sizeof(struct ht_slab_header)))
				continue; /* never written: FREE */
			uint32_t st = ld32_acq(slab + offsetof(struct ht_slab_header, state));
			if (st == HT_SLAB_FREE || st == HT_SLAB_FOLDING)
				continue;
			if (st != HT_SLAB_ACTIVE && st != HT_SLAB_RETIRED) {
				note_malformed(s, "slab %u has unknown state %u", i, st);
				continue;
			}
			const unsigned char *e = slab + sizeof(struct ht_slab_header);
			uint64_t erel = rel + sizeof(struct ht_slab_header);
			for (uint32_t j = 0; j < h->slab_entries;
			     j++, e += sizeof(struct ht_slab_entry), erel += sizeof(struct ht_slab_entry)) {
				if (!has(pg, h->slabs.offset + erel, sizeof(struct ht_slab_entry)))
					continue; /* on a hole: empty */
				uint32_t id = ld32_acq(e + offsetof(struct ht_slab_entry, stack_id));
				if (id == HT_STACK_NONE)
					continue;
				if (id >= h->stacks.capacity) {
					note_malformed(s, "slab %u entry %u: stack id %u >= stacks capacity %u",
						       i, j, id, h->stacks.capacity);
					continue;
				}
				struct acc_slot *t = acc_row(a, id);
				if (!t)
					return fail(err, HTR_E_NOMEM, ENOMEM, "out of memory");
				struct ht_counters row = {0};
				add_counters(&row, e + offsetof(struct ht_slab_entry, c));
				acc_add(t, &row);
				if (peak) {
					uint64_t prel = rel + peaks_at + (uint64_t)j * sizeof(struct ht_peak);
					const unsigned char *pk =
						has(pg, h->slabs.offset + prel, sizeof(struct ht_peak))
							? slabs + prel : NULL;
					int64_t pb, po;
					row_peak(pk, g1, &row, &pb, &po, &moved);
					t->peak_bytes = add_sat_i64(t->peak_bytes, pb);
					t->peak_objects = add_sat_i64(t->peak_objects, po);
				}
			}
		}

		/* 3. the shared table, by stack id. Rows past stacks_used belong to ids nobody
		 * has handed out; not reading them also keeps us off pages the writer never
		 * reserved. A fold finished before s1 was read only added to ids below the
		 * stacks_used we load now. */
		uint32_t rows = clamp_u32(ld32_acq(usedp), h->stacks.capacity);
		rows = clamp_u32(rows, h->shared.capacity);
		const unsigned char *shared = m + h->shared.offset;
		/* only with the bit: the descriptor is not validated without it */
		const unsigned char *speak = peak ? m + h->shared_peak.offset : NULL;
		for (uint32_t id = 0; id < rows; id++) {
			const unsigned char *c = shared + (uint64_t)id * sizeof(struct ht_counters);
			uint64_t coff = h->shared.offset + (uint64_t)id * sizeof(struct ht_counters);
			if (!has(pg, coff, sizeof(struct ht_counters))) {
				/* on a hole: zeros. A row whose first page is a hole: so are the
				 * rest of that page's rows (a file claiming millions of rows on
				 * holes costs a step per page) */
				if (!has(pg, coff, 0)) {
					uint64_t j = past_page(h->shared.offset, sizeof(struct ht_counters), id);
					id = (uint32_t)(j < rows ? j : rows) - 1;
				}
				continue;
			}
			struct ht_counters row = {0};
			add_counters(&row, c);
			if (!counters_nonzero(&row))
				continue;
			if (id == HT_STACK_NONE) {
				note_malformed(s, "shared table row 0 (no stack) has counts");
				continue;
			}
			struct acc_slot *t = acc_row(a, id);
			if (!t)
				return fail(err, HTR_E_NOMEM, ENOMEM, "out of memory");
			acc_add(t, &row);
			if (peak) {
				/* validated: shared_peak.capacity >= shared.capacity > id */
				uint64_t prel = (uint64_t)id * sizeof(struct ht_peak);
				const unsigned char *pk =
					has(pg, h->shared_peak.offset + prel, sizeof(struct ht_peak))
						? speak + prel : NULL;
				int64_t pb, po;
				row_peak(pk, g1, &row, &pb, &po, &moved);
				t->peak_bytes = add_sat_i64(t->peak_bytes, pb);
				t->peak_objects = add_sat_i64(t->peak_objects, po);
			}
		}

		/* 4. nothing was folded while we read */
		__atomic_thread_fence(__ATOMIC_ACQUIRE);
		uint64_t s2 = __atomic_load_n((const uint64_t *)(const void *)seqp, __ATOMIC_RELAXED);
		if (s2 != s1)
			continue;
		/* ...and the peak the rows were read against is still the latest: a program
		 * that keeps growing makes a new one at each sample, so after a few passes
		 * one is taken as it is (settled = 0). */
		int settled = 1;
		if (peak) {
			uint64_t g2 = __atomic_load_n((const uint64_t *)(const void *)genp, __ATOMIC_RELAXED);
			settled = g2 == g1 && !moved;
			if (!settled && peak_moves < HTR_PEAK_ATTEMPTS) {
				peak_moves++;
				continue;
			}
		}
		s->peak.gen = g1;
		s->peak.bytes = pbytes;
		s->peak.ns = pns;
		s->peak.settled = (uint32_t)settled;
		*used_after = clamp_u32(ld32_acq(usedp), h->stacks.capacity);
		return 0;
	}
}

static const unsigned char *stack_rec(const struct htr_region *r, uint32_t id)
{
	return r->map + r->hdr.stacks.offset + (uint64_t)id * sizeof(struct ht_stack);
}

static int emit_counters(const struct htr_region *r, struct pages *pg, struct acc *a,
			 uint32_t used, struct htr_snapshot *s, struct htr_error *err)
{
	struct htr_counters *out = &s->counters;
	/* Compact the non-zero rows to the front of the table and sort them by id. */
	uint32_t n = 0;
	if (a->slots)
		for (uint64_t i = 0; i <= a->mask; i++)
			if (a->slots[i].id && counters_nonzero(&a->slots[i].c))
				a->slots[n++] = a->slots[i];
	if (n)
		qsort(a->slots, n, sizeof *a->slots, cmp_slot_id);
	size_t cnt = n ? n : 1;
	out->ids = malloc(cnt * sizeof *out->ids);
	out->alloc_objects = malloc(cnt * sizeof(uint64_t));
	out->alloc_bytes = malloc(cnt * sizeof(uint64_t));
	out->free_objects = malloc(cnt * sizeof(uint64_t));
	out->free_bytes = malloc(cnt * sizeof(uint64_t));
	out->samples = malloc(cnt * sizeof(uint64_t));
	out->inuse_objects = malloc(cnt * sizeof(uint64_t));
	out->inuse_bytes = malloc(cnt * sizeof(uint64_t));
	out->peak_objects = malloc(cnt * sizeof(uint64_t));
	out->peak_bytes = malloc(cnt * sizeof(uint64_t));
	KEEP();
	if (!out->ids || !out->alloc_objects || !out->alloc_bytes || !out->free_objects ||
	    !out->free_bytes || !out->samples || !out->inuse_objects || !out->inuse_bytes ||
	    !out->peak_objects || !out->peak_bytes)
		return fail(err, HTR_E_NOMEM, ENOMEM, "out of memory");
	uint32_t k = 0;
	for (uint32_t i = 0; i < n; i++) {
		uint32_t id = a->slots[i].id;
		const struct ht_counters *c = &a->slots[i].c;
		/* Counts may only name a published, canonical stack (see reader.h). */
		if (id >= used) {
			note_malformed(s, "counts for stack id %u >= stacks_used %u", id, used);
			continue;
		}
		uint32_t fl = 0;
		if (has_now(pg, r->hdr.stacks.offset + (uint64_t)id * sizeof(struct ht_stack),
			    sizeof(struct ht_stack)))
			fl = ld32_acq(stack_rec(r, id) + offsetof(struct ht_stack, flags));
		if (!(fl & HT_STACK_READY) || (fl & HT_STACK_DUPLICATE)) {
			note_malformed(s, "counts for stack id %u whose record is %s", id,
				       (fl & HT_STACK_READY) ? "a duplicate" : "not ready");
			continue;
		}
		out->ids[k] = id;
		out->alloc_objects[k] = c->alloc_objects;
		out->alloc_bytes[k] = c->alloc_bytes;
		out->free_objects[k] = c->free_objects;
		out->free_bytes[k] = c->free_bytes;
		out->samples[k] = c->samples;
		/* the one in-use rule (reader.h) */
		out->inuse_objects[k] = sub_clamp(c->alloc_objects, c->free_objects);
		out->inuse_bytes[k] = sub_clamp(c->alloc_bytes, c->free_bytes);
		const struct acc_slot *sl = &a->slots[i];
		out->peak_objects[k] = sl->peak_objects > 0 ? (uint64_t)sl->peak_objects : 0;
		out->peak_bytes[k] = sl->peak_bytes > 0 ? (uint64_t)sl->peak_bytes : 0;
		s->inuse_bytes = add_sat(s->inuse_bytes, out->inuse_bytes[k]);
		s->inuse_objects = add_sat(s->inuse_objects, out->inuse_objects[k]);
		s->peak_stack_bytes = add_sat(s->peak_stack_bytes, out->peak_bytes[k]);
		k++;
	}
	out->count = k;
	return 0;
}

/* Timeline points from since on (struct htr_timeline). A slot is read like a seqlock: ns
 * (acquire) non-zero, the fields, ns again unchanged. A slot the writer has claimed but
 * not yet cleared still holds the point one lap older: it is older than the point before
 * it, and is taken as not yet written. Every bound comes from the validated capacity. */
static int read_timeline(const struct htr_region *r, const struct pages *pg, uint64_t since,
			 struct htr_snapshot *s, struct htr_error *err)
{
	const struct ht_header *h = &r->hdr;
	struct htr_timeline *out = &s->timeline;
	out->next = since;
	if (!(h->features & HT_FEATURE_TIMELINE))
		return 0;
	const unsigned char *nextp = HDR_FIELD(r->map, timeline_next);
	uint64_t cap = h->timeline.capacity; /* >= 1, validated */
	uint64_t n1 = ld64_acq(nextp);
	uint64_t lo = n1 > cap ? n1 - cap : 0;
	if (since > n1) /* the counter only grows: a since from elsewhere; start over */
		since = 0;
	uint64_t first = since > lo ? since : lo;
	uint64_t want = n1 - first; /* <= cap */
	size_t cnt = want ? (size_t)want : 1;
	out->index = malloc(cnt * sizeof(uint64_t));
	out->ns = malloc(cnt * sizeof(uint64_t));
	out->inuse_bytes = malloc(cnt * sizeof(int64_t));
	out->alloc_bytes = malloc(cnt * sizeof(uint64_t));
	out->rss_bytes = malloc(cnt * sizeof(uint64_t));
	KEEP();
	if (!out->index || !out->ns || !out->inuse_bytes || !out->alloc_bytes || !out->rss_bytes)
		return fail(err, HTR_E_NOMEM, ENOMEM, "out of memory for the timeline");
	const unsigned char *ring = r->map + h->timeline.offset;
	uint64_t gap = n1, last_ns = 0;
	uint32_t k = 0;
	for (uint64_t n = first; n < n1; n++) {
		uint64_t rel = (n % cap) * sizeof(struct ht_timeline_point);
		const unsigned char *pt = ring + rel;
		uint64_t ns = 0, rss = 0, alloc = 0;
		int64_t inuse = 0;
		if (has(pg, h->timeline.offset + rel, sizeof(struct ht_timeline_point))) {
			ns = ld64_acq(pt + offsetof(struct ht_timeline_point, ns));
			inuse = (int64_t)ld64(pt + offsetof(struct ht_timeline_point, inuse_bytes));
			alloc = ld64(pt + offsetof(struct ht_timeline_point, alloc_bytes));
			rss = ld64(pt + offsetof(struct ht_timeline_point, rss_bytes));
			__atomic_thread_fence(__ATOMIC_ACQUIRE);
			if (ld64(pt + offsetof(struct ht_timeline_point, ns)) != ns)
				ns = 0; /* being rewritten */
		}
		if (ns == 0 || ns < last_ns) {
			if (gap == n1)
				gap = n;
			continue;
		}
		last_ns = ns;
		out->index[k] = n;
		out->ns[k] = ns;
		out->inuse_bytes[k] = inuse;
		out->alloc_bytes[k] = alloc;
		out->rss_bytes[k] = rss;
		k++;
	}
	/* Points the writer claimed while we read may have lapped the oldest we took. */
	uint64_t n2 = ld64_acq(nextp);
	uint64_t lo2 = n2 > cap ? n2 - cap : 0;
	uint32_t drop = 0;
	while (drop < k && out->index[drop] < lo2)
		drop++;
	if (drop) {
		uint32_t rest = k - drop;
		memmove(out->index, out->index + drop, rest * sizeof(uint64_t));
		memmove(out->ns, out->ns + drop, rest * sizeof(uint64_t));
		memmove(out->inuse_bytes, out->inuse_bytes + drop, rest * sizeof(int64_t));
		memmove(out->alloc_bytes, out->alloc_bytes + drop, rest * sizeof(uint64_t));
		memmove(out->rss_bytes, out->rss_bytes + drop, rest * sizeof(uint64_t));
		k = rest;
	}
	out->count = k;
	out->next = gap > lo2 ? gap : lo2;
	return 0;
}

static int grow_u32(uint32_t **p, uint64_t n)
{
	uint32_t *q = realloc(*p, n * sizeof **p);
	if (!q)
		return -1;
	*p = q;
	KEEP();
	return 0;
}

static int stacks_reserve(struct htr_stacks *out, uint32_t *cap, uint64_t want)
{
	if (want > UINT32_MAX)
		want = UINT32_MAX;
	if (grow_u32(&out->ids, want) || grow_u32(&out->depths, want) ||
	    grow_u32(&out->flags, want) || grow_u32(&out->frame_start, want))
		return -1;
	*cap = (uint32_t)want;
	return 0;
}

static int read_stacks(const struct htr_region *r, struct pages *pg, uint32_t since,
		       struct htr_snapshot *s, struct htr_error *err)
{
	const struct ht_header *h = &r->hdr;
	struct htr_stacks *out = &s->stacks;
	uint32_t used = clamp_u32(ld32_acq(HDR_FIELD(r->map, stacks_used)), h->stacks.capacity);
	uint32_t first = since > HT_STACK_NONE ? since : HT_STACK_NONE + 1;
	uint32_t rcap = 0; /* records allocated: grows with READY records found, not with ids */
	if (stacks_reserve(out, &rcap, 64))
		return fail(err, HTR_E_NOMEM, ENOMEM, "out of memory");
	out->next_stack = since > used ? since : used;

	const uint64_t *pool = (const uint64_t *)(const void *)(r->map + h->frames.offset);
	uint64_t fcap = 0, nframes = 0; /* frames copied so far never exceed frames capacity */
	int gap = 0;
	uint32_t k = 0;
	for (uint32_t id = first; id < used; id++) {
		const unsigned char *rec = stack_rec(r, id);
		uint64_t roff = h->stacks.offset + (uint64_t)id * sizeof(struct ht_stack);
		/* a record on a hole is zeros: not READY. Where its first page is a hole, so
		 * are the rest of that page's records: one step per page */
		uint32_t fl = 0;
		if (has(pg, roff, sizeof(struct ht_stack)))
			fl = ld32_acq(rec + offsetof(struct ht_stack, flags));
		else if (!has(pg, roff, 0)) {
			uint64_t j = past_page(h->stacks.offset, sizeof(struct ht_stack), id);
			if (!gap) {
				gap = 1;
				out->next_stack = id;
			}
			id = (uint32_t)(j < used ? j : used) - 1;
			continue;
		}
		if (!(fl & HT_STACK_READY)) {
			if (!gap) {
				gap = 1;
				out->next_stack = id;
			}
			continue;
		}
		if (fl & HT_STACK_DUPLICATE)
			continue;
		uint64_t off = ld64(rec + offsetof(struct ht_stack, frame_off));
		uint32_t depth = ld32(rec + offsetof(struct ht_stack, depth));
		if (depth > h->max_depth) {
			note_malformed(s, "stack %u: depth %u > max_depth %u", id, depth, h->max_depth);
			continue;
		}
		if (off > h->frames.capacity || depth > h->frames.capacity - off) {
			note_malformed(s, "stack %u: frames [%llu, +%u) outside the frame pool (%u)", id,
				       (unsigned long long)off, depth, h->frames.capacity);
			continue;
		}
		if ((fl & HT_STACK_SYNTHETIC) && depth != 0) {
			note_malformed(s, "stack %u: synthetic with depth %u", id, depth);
			continue;
		}
		if (nframes + depth > h->frames.capacity) {
			/* Records share frames: a writer with a bump allocator never does that. */
			note_malformed(s, "stack %u: records claim more frames than the pool holds", id);
			continue;
		}
		if (depth && !has_now(pg, h->frames.offset + off * sizeof(uint64_t), (uint64_t)depth * sizeof(uint64_t))) {
			/* the writer wrote them before READY: a hole there is no writer's doing */
			note_malformed(s, "stack %u: frames [%llu, +%u) lie on a hole", id,
				       (unsigned long long)off, depth);
			continue;
		}
		if (nframes + depth > fcap) {
			uint64_t want = fcap ? fcap * 2 : 1024;
			while (want < nframes + depth)
				want *= 2;
			if (want > h->frames.capacity)
				want = h->frames.capacity;
			uint64_t *p = realloc(out->frames, want * sizeof(uint64_t));
			if (!p)
				return fail(err, HTR_E_NOMEM, ENOMEM, "out of memory for frames");
			out->frames = p;
			KEEP();
			fcap = want;
		}
		if (k == rcap && stacks_reserve(out, &rcap, (uint64_t)rcap * 2))
			return fail(err, HTR_E_NOMEM, ENOMEM, "out of memory for stacks");
		/* Written before READY was released and never changed since: plain reads. */
		if (depth)
			memcpy(out->frames + nframes, pool + off, (size_t)depth * sizeof(uint64_t));
		out->ids[k] = id;
		out->depths[k] = depth;
		out->flags[k] = fl;
		out->frame_start[k] = (uint32_t)nframes; /* < frames capacity < 2^32 */
		nframes += depth;
		k++;
	}
	out->count = k;
	out->nframes = nframes;
	return 0;
}

static int read_modules(const struct htr_region *r, struct pages *pg, struct htr_snapshot *s,
			struct htr_error *err)
{
	const struct ht_header *h = &r->hdr;
	uint32_t used = clamp_u32(ld32_acq(HDR_FIELD(r->map, modules_used)), h->modules.capacity);
	uint32_t mcap = 0; /* grows with published entries found */
	const unsigned char *pool = r->map + h->paths.offset;
	uint64_t total = 0;
	uint32_t k = 0;
	for (uint32_t i = 0; i < used; i++) {
		uint64_t eoff = h->modules.offset + (uint64_t)i * sizeof(struct ht_module);
		const unsigned char *e = r->map + eoff;
		if (!has(pg, eoff, sizeof(struct ht_module))) {
			if (!has(pg, eoff, 0)) { /* zeros: EMPTY, and so is the rest of its page */
				uint64_t j = past_page(h->modules.offset, sizeof(struct ht_module), i);
				i = (uint32_t)(j < used ? j : used) - 1;
			}
			continue;
		}
		uint32_t st = ld32_acq(e + offsetof(struct ht_module, state));
		if (st == HT_MODULE_EMPTY)
			continue; /* handed out, not yet published */
		if (st != HT_MODULE_LOADED && st != HT_MODULE_UNLOADED) {
			note_malformed(s, "module %u has unknown state %u", i, st);
			continue;
		}
		if (k == mcap) {
			uint32_t want = mcap ? mcap * 2 : 16;
			struct htr_module *p = realloc(s->modules, (size_t)want * sizeof *p);
			if (!p)
				return fail(err, HTR_E_NOMEM, ENOMEM, "out of memory for modules");
			s->modules = p;
			KEEP();
			mcap = want;
		}
		struct htr_module *mo = &s->modules[k];
		memset(mo, 0, sizeof *mo);
		mo->index = i;
		mo->state = st;
		mo->flags = ld32(e + offsetof(struct ht_module, flags));
		uint32_t off = ld32(e + offsetof(struct ht_module, path_off));
		uint32_t len = ld32(e + offsetof(struct ht_module, path_len));
		/* path_len bytes then a NUL, all inside the pool */
		if ((uint64_t)off + len >= h->paths.bytes) {
			note_malformed(s, "module %u: path [%u, +%u] outside the path pool (%llu bytes)",
				       i, off, len, (unsigned long long)h->paths.bytes);
			continue;
		}
		if (!has_now(pg, h->paths.offset + off, (uint64_t)len + 1)) {
			note_malformed(s, "module %u: path [%u, +%u] lies on a hole", i, off, len);
			continue;
		}
		if (pool[(uint64_t)off + len] != '\0' || memchr(pool + off, '\0', len) != NULL) {
			note_malformed(s, "module %u: path is not a NUL-terminated string of %u bytes",
				       i, len);
			continue;
		}
		uint32_t bl = ld32(e + offsetof(struct ht_module, build_id_len));
		if (bl > HTR_BUILD_ID_MAX) {
			note_malformed(s, "module %u: build_id_len %u > %u", i, bl, HTR_BUILD_ID_MAX);
			continue;
		}
		mo->path_len = len;
		mo->path_off = off;
		mo->build_id_len = bl;
		memcpy(mo->build_id, e + offsetof(struct ht_module, build_id), bl);
		mo->load_bias = ld64(e + offsetof(struct ht_module, load_bias));
		mo->start = ld64(e + offsetof(struct ht_module, start));
		mo->limit = ld64(e + offsetof(struct ht_module, limit));
		mo->file_offset = ld64(e + offsetof(struct ht_module, file_offset));
		mo->load_ns = ld64(e + offsetof(struct ht_module, load_ns));
		mo->unload_ns = ld64(e + offsetof(struct ht_module, unload_ns));
		total += (uint64_t)len + 1; /* <= used * (paths.bytes + 1): bounded by the file */
		k++;
	}
	s->module_count = k;
	s->strings = malloc(total ? total : 1);
	KEEP();
	if (!s->strings)
		return fail(err, HTR_E_NOMEM, ENOMEM, "out of memory");
	uint64_t at = 0;
	for (uint32_t i = 0; i < k; i++) {
		struct htr_module *mo = &s->modules[i];
		uint32_t len = mo->path_len;
		memcpy(s->strings + at, pool + mo->path_off, len);
		s->strings[at + len] = '\0';
		mo->path = s->strings + at;
		/* The pool was checked in the loop above and is read again here: a writer that
		 * rewrote it in between (or truncated the file and grew it back) may have put a
		 * NUL inside. The copy is what we return: its length is what it holds. */
		mo->path_len = (uint32_t)strnlen(mo->path, len);
		at += (uint64_t)len + 1;
	}
	return 0;
}

void htr_snapshot_free(struct htr_snapshot *s)
{
	free(s->counters.ids);
	free(s->counters.alloc_objects);
	free(s->counters.alloc_bytes);
	free(s->counters.free_objects);
	free(s->counters.free_bytes);
	free(s->counters.samples);
	free(s->counters.inuse_objects);
	free(s->counters.inuse_bytes);
	free(s->counters.peak_objects);
	free(s->counters.peak_bytes);
	free(s->timeline.index);
	free(s->timeline.ns);
	free(s->timeline.inuse_bytes);
	free(s->timeline.alloc_bytes);
	free(s->timeline.rss_bytes);
	free(s->stacks.ids);
	free(s->stacks.depths);
	free(s->stacks.flags);
	free(s->stacks.frame_start);
	free(s->stacks.frames);
	free(s->modules);
	free(s->strings);
	memset(s, 0, sizeof *s);
}

int htr_snapshot_take(const struct htr_region *r, uint32_t since, struct htr_snapshot *s,
		 struct htr_error *err)
{
	return htr_snapshot_take2(r, since, 0, s, err);
}

/* What a snapshot holds while it is taken, so that a fault can free it all. */
struct take_ctx {
	const struct htr_region *r;
	uint32_t since;
	uint64_t since_point;
	struct htr_snapshot *s;
	struct htr_error *err;
	struct pages pg;
	struct acc a;
};

/* Steps of the snapshot that read the mapping (under the guard). */
static int take_body(void *arg)
{
	struct take_ctx *c = arg;
	const struct htr_region *r = c->r;
	struct htr_snapshot *s = c->s;
	/* Which pages hold data, once per snapshot: nothing below touches a hole. */
	pages_scan(&c->pg, r->fd, r->hdr.file_bytes);
	KEEP();
	uint32_t used = 0;
	int rc = sum_counters(r, &c->pg, &c->a, s, &used, c->err);
	if (rc == 0)
		rc = emit_counters(r, &c->pg, &c->a, used, s, c->err);
	/* Stacks after counters: every id counted above is READY by now (see reader.h). */
	if (rc == 0)
		rc = read_stacks(r, &c->pg, c->since, s, c->err);
	if (rc == 0)
		rc = read_timeline(r, &c->pg, c->since_point, s, c->err);
	if (rc == 0)
		rc = read_modules(r, &c->pg, s, c->err);
	if (rc == 0)
		read_live(r, has(&c->pg, HT_CONTROL_OFFSET, sizeof(struct ht_control)), &s->live);
	return rc;
}

int htr_snapshot_take2(const struct htr_region *r, uint32_t since, uint64_t since_point,
		       struct htr_snapshot *s, struct htr_error *err)
{
	memset(s, 0, sizeof *s);
	if (!r->map)
		return fail(err, HTR_E_ARG, 0, "region is not open");
	/* A file that shrank under the mapping: refuse it while we can (the guard catches
	 * what shrinks later). */
	struct stat st;
	if (fstat(r->fd, &st) != 0)
		return fail_errno(err, "fstat");
	if ((uint64_t)st.st_size < r->hdr.file_bytes)
		return fail(err, HTR_E_CHANGED, 0, "file shrank to %llu bytes (header says %llu)",
			    (unsigned long long)st.st_size, (unsigned long long)r->hdr.file_bytes);
	if (check_data(&st, err))
		return -1;

	s->hdr = r->hdr;
	struct take_ctx c = {r, since, since_point, s, err, {NULL, 0, NULL, -1}, {NULL, 0, 0}};
	int rc = guarded(r->map, r->map_bytes, take_body, &c);
	free(c.a.slots);
	free(c.pg.bits);
	free(c.pg.asked);
	if (rc == 1)
		fail_changed(err);
	if (rc != 0) {
		htr_snapshot_free(s);
		return -1;
	}
	ok(err);
	return 0;
}

int htr_read_path(const char *path, uint32_t since, struct htr_snapshot *out,
		  struct htr_error *err)
{
	return htr_read_path2(path, since, 0, out, err);
}

int htr_read_path2(const char *path, uint32_t since, uint64_t since_point,
		   struct htr_snapshot *out, struct htr_error *err)
{
	struct htr_region r;
	memset(out, 0, sizeof *out);
	if (htr_open(&r, path, err))
		return -1;
	int rc = htr_snapshot_take2(&r, since, since_point, out, err);
	if (rc == 0) {
		rc = htr_alive(&r, path, &out->alive, err);
		if (rc != 0)
			htr_snapshot_free(out);
	} else if (err && err->kind == HTR_E_BUSY) {
		/* A writer killed in the middle of a fold leaves seq odd for good. */
		int alive = -1;
		if (htr_alive(&r, path, &alive, NULL) != 0)
			alive = -1;
		err->alive = alive;
		if (alive == 0) {
			size_t n = strlen(err->msg);
			snprintf(err->msg + n, sizeof err->msg - n, "; no writer holds it");
		}
	}
	htr_close(&r);
	return rc;
}

struct ctl_ctx {
	struct ht_control *ctl;
	int set_paused;
	uint32_t paused;
	int set_rate;
	uint64_t rate;
};

static int ctl_body(void *arg)
{
	struct ctl_ctx *c = arg;
	/* Release: whoever sees the new value also sees everything we wrote before it. The
	 * preload reads these words relaxed at its sample points. */
	if (c->set_rate)
		__atomic_store_n(&c->ctl->rate, c->rate, __ATOMIC_RELEASE);
	if (c->set_paused)
		__atomic_store_n(&c->ctl->paused, c->paused, __ATOMIC_RELEASE);
	__atomic_fetch_add(&c->ctl->seq, 1, __ATOMIC_RELEASE);
	return 0;
}

int htr_write_control(const char *path, int set_paused, uint32_t paused, int set_rate,
		      uint64_t rate, struct htr_error *err)
{
	struct htr_region r;
	if (htr_open(&r, path, err))
		return -1;
	struct stat st;
	int fd = open_file(path, O_RDWR, &st, err);
	if (fd < 0) {
		htr_close(&r);
		return -1;
	}
	int rc = 0;
	if (st.st_dev != r.dev || st.st_ino != r.ino) {
		rc = fail(err, HTR_E_IO, ESTALE, "file was replaced while it was being opened");
		goto out;
	}
	/* Only the control page is ever mapped writable. */
	unsigned char *c = mmap(NULL, HT_SECTION_ALIGN, PROT_READ | PROT_WRITE, MAP_SHARED, fd,
				HT_CONTROL_OFFSET);
	if (c == MAP_FAILED) {
		rc = fail_errno(err, "mmap control page");
		goto out;
	}
	struct ctl_ctx cc = {(struct ht_control *)(void *)c, set_paused, paused, set_rate, rate};
	/* the file can shrink under this mapping too */
	if (guarded(c, HT_SECTION_ALIGN, ctl_body, &cc) != 0)
		rc = fail_changed(err);
	munmap(c, HT_SECTION_ALIGN);
out:
	close(fd);
	htr_close(&r);
	if (rc == 0)
		ok(err);
	return rc;
}
