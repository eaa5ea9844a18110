#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>
#include "altstack.h"
#include "core.h"
#include "live.h"
#include "modules.h"
#include "stacks.h"
#include "unwind.h"

HT_HIDDEN HT_TLS struct ht_thread ht_self;
HT_HIDDEN struct ht_global ht_g;
static pthread_key_t exit_key;
static uint64_t seed_base;
HT_HIDDEN ht_spin_t *ht_slab_fold_lock(void);

static void on_thread_exit(void *unused)
{
	(void)unused;
	ht_core_thread_exit();
}

static uint64_t mix64(uint64_t z)
{
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return z ^ (z >> 31);
}

HT_HIDDEN int ht_core_init(const struct ht_config *cfg, uint32_t flags, char *err, size_t errlen)
{
	ht_g.cfg = *cfg;
	ht_g.rate = cfg->rate;
	seed_base = cfg->seed ? cfg->seed
			      : mix64(ht_now_ns() ^ ((uint64_t)getpid() << 32) ^ (uintptr_t)&seed_base);
	ht_g.cfg.seed = seed_base;
	if (ht_live_init() < 0) {
		snprintf(err, errlen, "cannot map the live-allocation table");
		return -1;
	}
	/* Exact mode from the start: every free looks in the table anyway (live.h). Not when
	 * the control area switches to rate 1 later: a process profiled exactly for a while
	 * would keep every free on the slow path after it switched back. */
	if (cfg->rate == 1)
		ht_live_filter_stick();
	static int key_made;
	if (!key_made && pthread_key_create(&exit_key, on_thread_exit) == 0)
		key_made = 1;
	/* The region itself is made at the first sample (ensure_region): a short-lived
	 * process that never reaches a sample point leaves no file behind. Say now, not
	 * then, if the directory is unusable. */
	if (ht_region_check_dir(cfg, err, errlen) < 0)
		return -1;
	ht_g.region_flags = flags;
	st_release(&ht_g.need_region, 1);
	st_release(&ht_g.state, HT_G_ACTIVE);
	return 0;
}

/* The region is made at the process's first sample; a fork child makes its own. Returns 0
 * when the region is there, -1 when it could not be made (this process stays unprofiled).
 *
 * Other threads reaching their first sample meanwhile spin on region_lock: its holder makes
 * system calls and runs our own code only, never waits on a lock the program could hold,
 * so that wait is short and closes no cycle (and at rate 1 no allocation is lost). The
 * module scan, which goes through the loader's lock, runs after region_lock is released,
 * and only by a thread that gets scan_lock without waiting. */
static HT_NOINLINE int make_region(void)
{
	ht_spin_lock(&ht_g.region_lock);
	if (!ht_g.need_region) {
		ht_spin_unlock(&ht_g.region_lock);
		return ht_g.region.hdr ? 0 : -1;
	}
	char err[256];
	if (ht_region_create(&ht_g.region, &ht_g.cfg, ht_g.region_flags, err, sizeof err) < 0) {
		st_relaxed(&ht_g.state, HT_G_DISABLED);
		st_release(&ht_g.need_region, 0);
		ht_spin_unlock(&ht_g.region_lock);
		/* Said after everything is consistent: formatting the line must find nothing
		 * half-made if it allocates and comes back through here. */
		if (err[0])
			ht_log("%s; this process is not profiled", err);
		return -1;
	}
	ht_region_publish(&ht_g.region);
	st_release(&ht_g.need_region, 0);
	ht_spin_unlock(&ht_g.region_lock);
	ht_modules_scan(&ht_g.region);
	return 0;
}

/* The fast checks below are inline (at rate 1 they run at every malloc and every free);
 * the work they skip is not. */
static inline int ensure_region(void)
{
	if (HT_LIKELY(!ld_acquire(&ht_g.need_region)))
		return ld_relaxed(&ht_g.region.hdr) ? 0 : -1;
	return make_region();
}

/* A thread's sampling state (its interval sequence), made at its first slow-path
 * allocation. Needs no region: a process whose threads never reach a sample point makes
 * none. */
static HT_NOINLINE void thread_setup(struct ht_thread *t)
{
	uint64_t ordinal = add_relaxed(&ht_g.threads_seen, 1);
	if (t->state == HT_THREAD_NEW) {
		ht_rng_seed(&t->rng, seed_base + ordinal * 0x9E3779B97F4A7C15ull);
		t->tid = (uint32_t)syscall(SYS_gettid);
		/* glibc keeps the first 32 keys' values in the thread descriptor: no allocation,
		 * no lock (our key is made at library load, among the first). */
		pthread_setspecific(exit_key, (void *)1);
		t->state = HT_THREAD_READY;
	} else {
		/* Fork child: the parent's slab belongs to the parent's region. A child draws
		 * its own sequence, still repeatable under HEAPTAP_SEED. */
		ht_rng_seed(&t->rng, ht_rng_next(&t->rng) ^ mix64(ht_g.epoch));
		t->tid = (uint32_t)syscall(SYS_gettid);
	}
	t->slab.slab = NULL;
	t->slab_epoch = 0;
	t->epoch = ht_g.epoch;
	t->rate = 0;
}

static inline void thread_init(struct ht_thread *t)
{
	if (HT_UNLIKELY(t->state == HT_THREAD_NEW || t->epoch != ht_g.epoch))
		thread_setup(t);
}

/* The thread's slab in this image's region, sought once (the region exists). */
static HT_NOINLINE void thread_slab_seek(struct ht_thread *t)
{
	t->slab_epoch = ht_g.epoch + 1;
	struct ht_region *r = &ht_g.region;
	add_relaxed(&r->hdr->threads_seen, 1);
	if (t->state != HT_THREAD_EXITING)
		ht_slab_acquire(r, &t->slab, t->tid);
}

static inline void thread_slab(struct ht_thread *t)
{
	if (HT_UNLIKELY(t->slab_epoch != ht_g.epoch + 1))
		thread_slab_seek(t);
}

/* Applies the sidecar's control area (there is none before the region); returns non-zero
 * while paused. */
static int apply_control(struct ht_region *r)
{
	if (!ld_relaxed(&r->hdr))
		return 0;
	struct ht_control *c = r->ctl;
	uint64_t want = ld_relaxed(&c->rate);
	if (HT_UNLIKELY(want && want != ld_relaxed(&ht_g.rate) && want <= (1ull << 40))) {
		st_relaxed(&ht_g.rate, want);
		st_relaxed(&r->hdr->rate_now, want);
	}
	uint32_t paused = ld_relaxed(&c->paused) != 0;
	if (HT_UNLIKELY(paused != ld_relaxed(&r->hdr->paused_now)))
		st_relaxed(&r->hdr->paused_now, paused);
	return paused;
}

/* Resident memory of the process (/proc/self/statm's second field, in pages), or 0. A few
 * system calls, no lock: at most once per timeline point. */
static uint64_t rss_bytes(void)
{
	int fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	char buf[128];
	ssize_t n = read(fd, buf, sizeof buf - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = 0;
	const char *q = buf;
	while (*q && *q != ' ')
		q++;
	uint64_t pages = 0;
	while (*++q >= '0' && *q <= '9')
		pages = pages * 10 + (uint64_t)(*q - '0');
	return pages * (uint64_t)sysconf(_SC_PAGESIZE);
}

static uint64_t last_point_ns;

/* A timeline point, if HT_TIMELINE_GAP_NS has passed since the last one (or force): one
 * thread claims the moment with a CAS, the others go on. */
static void timeline_point(struct ht_region *r, uint64_t now, int force)
{
	struct ht_header *h = r->hdr;
	uint64_t last = ld_relaxed(&last_point_ns);
	if (!force && now - last < HT_TIMELINE_GAP_NS)
		return;
	if (!__atomic_compare_exchange_n(&last_point_ns, &last, now, 0, __ATOMIC_RELAXED,
					 __ATOMIC_RELAXED) && !force)
		return;
	uint64_t n = add_relaxed(&h->timeline_next, 1);
	uint64_t i = n % h->timeline.capacity;
	if (ht_region_reserve_timeline(r, i + 1) != 0) {
		ht_drop(r, HT_DROP_RESERVE_FAILED);
		return;
	}
	struct ht_timeline_point *pt = &r->timeline[i];
	/* ns = 0 while the other fields change; a reader skips it or sees them whole. */
	st_relaxed(&pt->ns, 0);
	__atomic_thread_fence(__ATOMIC_RELEASE);
	st_relaxed(&pt->inuse_bytes, ld_relaxed(&h->inuse_bytes));
	st_relaxed(&pt->alloc_bytes, ld_relaxed(&h->alloc_bytes));
	st_relaxed(&pt->rss_bytes, rss_bytes());
	st_release(&pt->ns, now);
}

/* The process-wide estimate moved by delta bytes at a sampled event (allocated: bytes
 * newly allocated, for the allocation total). A new high-water mark records its time and
 * bumps peak_gen, after the event's own row was updated (struct ht_peak). */
static HT_TLS uint32_t heap_events;

/* A new high-water mark (maybe: another thread may have raised it past now first), then
 * the timeline's clock. Out of line: at rate 1, heap_moved runs at every malloc and free. */
static HT_NOINLINE void heap_point(struct ht_region *r, int64_t now, int maybe_peak)
{
	struct ht_header *h = r->hdr;
	uint64_t ns = 0;
	if (maybe_peak) {
		uint64_t pk = ld_relaxed(&h->peak_bytes);
		while ((uint64_t)now > pk) {
			if (__atomic_compare_exchange_n(&h->peak_bytes, &pk, (uint64_t)now, 1,
							__ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
				ns = ht_now_ns();
				st_relaxed(&h->peak_ns, ns);
				__atomic_fetch_add(&h->peak_gen, 1, __ATOMIC_RELEASE);
				break;
			}
		}
		/* Not a peak after all: the clock's test that heap_moved skipped. */
		if (!ns && ld_relaxed(&ht_g.rate) == 1 && (++heap_events & 31))
			return;
	}
	timeline_point(r, ns ? ns : ht_now_ns(), 0);
}

static inline __attribute__((always_inline)) void
heap_moved(struct ht_region *r, int64_t delta, uint64_t allocated)
{
	struct ht_header *h = r->hdr;
	int64_t now = __atomic_add_fetch(&h->inuse_bytes, delta, __ATOMIC_RELAXED);
	if (allocated)
		add_relaxed(&h->alloc_bytes, allocated);
	int maybe_peak = delta > 0 && now > 0 && (uint64_t)now > ld_relaxed(&h->peak_bytes);
	/* The clock for the timeline: at every event at sampling rates (events are rare), at
	 * every 32nd of a thread's at rate 1 (where every allocation is one). */
	if (HT_LIKELY(!maybe_peak) && ld_relaxed(&ht_g.rate) == 1 && (++heap_events & 31))
		return;
	heap_point(r, now, maybe_peak);
}

static void record(struct ht_thread *t, void *p, size_t size, uint64_t rate,
		   const uint64_t *pcs, uint32_t depth, int truncated, uint32_t *out_id)
{
	struct ht_region *r = &ht_g.region;
	if (truncated)
		ht_drop(r, HT_DROP_TRUNCATED);
	int is_new;
	uint32_t id = ht_stack_intern(r, pcs, depth, truncated ? HT_STACK_TRUNCATED : 0, &is_new);
	if (is_new) {
		/* A new stack may point into an object loaded since the last scan. */
		for (uint32_t i = 0; i < depth; i++)
			if (!ht_modules_cover(r, pcs[i])) {
				ht_modules_scan(r);
				break;
			}
	}
	struct ht_weight w = ht_weight_of(size, rate);
	ht_count_alloc(r, &t->slab, id, w.objects, w.bytes);
	heap_moved(r, (int64_t)w.bytes, w.bytes);
	if (p && ht_live_insert(p, id, ht_g.epoch, w.objects, w.bytes) < 0)
		ht_drop(r, HT_DROP_LIVE_FULL);
	if ((++t->samples & 63) == 1)
		st_relaxed(&r->hdr->heartbeat_ns, ht_now_ns());
	if (out_id)
		*out_id = id;
}

/* The sampling decision. Returns the rate to weight with, or 0 when not sampled. */
static inline uint64_t decide(struct ht_thread *t, size_t size)
{
	struct ht_region *r = &ht_g.region;
	int paused = apply_control(r);
	uint64_t rate = ld_relaxed(&ht_g.rate);
	if (t->rate != rate) {
		/* New thread, or the rate changed: start a fresh interval at this rate. */
		t->rate = rate;
		t->countdown = ht_next_interval(&t->rng, rate);
		if (rate > 1 && size < t->countdown) {
			t->countdown -= size;
			return 0;
		}
	}
	/* This allocation reaches the sample point; draw the next interval. The overshoot
	 * is dropped: the exponential distribution is memoryless. (At rate 1 it is 0.) */
	t->countdown = rate > 1 ? ht_next_interval(&t->rng, rate) : 0;
	if (HT_UNLIKELY(paused)) {
		ht_drop(r, HT_DROP_PAUSED);
		if (rate <= 1)
			t->countdown = 0;
		return 0;
	}
	return rate;
}

/* A sample point was reached but cannot be taken now (see HT_DROP_BUSY): count it and
 * redraw, so the next allocation of this thread is not sampled in its place. A thread not
 * yet set up keeps its countdown at 0 and tries again at its next allocation. */
static void skip_busy(struct ht_thread *t)
{
	ht_drop(&ht_g.region, HT_DROP_BUSY);
	if (t->state == HT_THREAD_READY && t->epoch == ht_g.epoch && t->rate > 1)
		t->countdown = ht_next_interval(&t->rng, t->rate);
}

/* What the thread's frame in ht_core_alloc hands to the sampling stack. */
struct sample_job {
	void *p;
	size_t size;
	uint64_t regs[HT_UNWIND_NREGS]; /* ht_core_alloc's frame, where the walk starts */
};

/* Runs on a sampling stack (altstack.h): the decision, the unwind of the thread's stack
 * from the registers ht_core_alloc captured, and the record. */
static void sample(void *arg)
{
	struct sample_job *j = arg;
	struct ht_thread *t = &ht_self;
	thread_init(t);
	uint64_t rate = decide(t, j->size);
	if (!rate)
		return;
	if (ensure_region() < 0) {
		t->countdown = HT_COUNTDOWN_OFF;
		return;
	}
	thread_slab(t);
	/* dlopen/dlclose since the last look: update the module table (and drop cached
	 * unwind rules of unloaded objects) before unwinding. One dl_iterate_phdr step; in
	 * exact mode, where every allocation gets here, only every 64th time. */
	if (rate > 1 || (t->samples & 63) == 0)
		ht_modules_refresh(&ht_g.region);
	uint64_t pcs[HT_MAX_DEPTH_LIMIT + 16];
	int truncated = 0;
	uint32_t max = ht_g.cfg.max_depth;
	int n = ht_g.cfg.unwinder == HT_UNWIND_FP
		? ht_unwind_fp_regs(j->regs, pcs, (int)max + 16, &truncated)
		: ht_unwind_regs(j->regs, pcs, (int)max + 16, &truncated);
	/* Drop our own frames (shim, slow path) from the top. */
	int skip = 0;
	while (skip < n && pcs[skip] >= ht_g.self_lo && pcs[skip] < ht_g.self_hi)
		skip++;
	uint32_t depth = (uint32_t)(n - skip);
	if (depth > max) {
		depth = max;
		truncated = 1;
	}
	record(t, j->p, j->size, rate, pcs + skip, depth, truncated, NULL);
}

HT_HIDDEN HT_NOINLINE void ht_core_alloc(void *p, size_t size)
{
	struct ht_thread *t = &ht_self;
	uint32_t st = ld_acquire(&ht_g.state);
	if (HT_UNLIKELY(st != HT_G_ACTIVE)) {
		if (st == HT_G_DISABLED)
			t->countdown = HT_COUNTDOWN_OFF;
		return; /* UNINIT: stay on the slow path until init finishes */
	}
	if (HT_UNLIKELY(t->busy)) {
		/* An allocation made by heaptap's own work (or by a libc call it makes) reached
		 * the sample point: do not sample it, and redraw rather than leave the sample
		 * point for whatever this thread allocates next. */
		if (t->state == HT_THREAD_READY && t->epoch == ht_g.epoch && t->rate > 1) {
			t->countdown = ht_next_interval(&t->rng, t->rate);
			ht_drop(&ht_g.region, HT_DROP_RECURSION);
		}
		return;
	}
	t->busy = 1;
	ht_live_prefetch_insert(p);   /* loads while the stack is walked */
	/* This frame is all a sample costs the thread's own stack: the rest runs on a
	 * sampling stack, and the walk starts from the registers captured here. */
	struct sample_job job = { p, size, { 0 } };
	HT_UNWIND_CAPTURE(job.regs);
	int slot;
	void *top = ht_alt_take(&slot);
	if (HT_LIKELY(top != NULL)) {
		ht_call_on_stack(top, sample, &job);
		ht_alt_give(slot);
	} else if (!ht_alt_ready()) {
		sample(&job);   /* no pool (C tests, or it could not be mapped) */
	} else {
		skip_busy(t);   /* every sampling stack in use */
	}
	/* The walk read this frame: it must not be a tail call's. */
	__asm__ volatile("" : : "r"(&job) : "memory");
	t->busy = 0;
}

HT_HIDDEN uint32_t ht_core_record(void *p, size_t size, const uint64_t *pcs, uint32_t depth,
				  int truncated)
{
	struct ht_thread *t = &ht_self;
	if (ld_acquire(&ht_g.state) != HT_G_ACTIVE || t->busy)
		return 0;
	t->busy = 1;
	uint32_t id = 0;
	thread_init(t);
	uint64_t rate = decide(t, size);
	if (rate && ensure_region() == 0) {
		thread_slab(t);
		record(t, p, size, rate, pcs, depth, truncated, &id);
	}
	t->busy = 0;
	return id;
}

HT_HIDDEN int ht_core_take(void *p, struct ht_live_entry *e)
{
	/* Called before the real free/realloc, so the address cannot be handed out and
	 * sampled again while its old entry is still in the table. */
	if (!p || !ht_live_remove(p, e))
		return 0;                /* the filter's false positive */
	/* An entry from before a fork was the parent's allocation: not ours to count. */
	return e->epoch == ht_g.epoch && ld_acquire(&ht_g.state) == HT_G_ACTIVE;
}

HT_HIDDEN void ht_core_count_free(const struct ht_live_entry *e)
{
	struct ht_thread *t = &ht_self;
	t->busy++;
	if (ensure_region() == 0) {
		thread_init(t);
		thread_slab(t);
		ht_count_free(&ht_g.region, &t->slab, e->stack_id, e->objects, e->bytes);
		heap_moved(&ht_g.region, -(int64_t)e->bytes, 0);
	}
	t->busy--;
}

HT_HIDDEN void ht_core_untake(void *p, const struct ht_live_entry *e)
{
	if (ht_live_insert(p, e->stack_id, e->epoch, e->objects, e->bytes) < 0)
		ht_drop(&ht_g.region, HT_DROP_LIVE_FULL);
}

HT_HIDDEN void ht_core_free(void *p)
{
	struct ht_live_entry e;
	if (ht_core_take(p, &e))
		ht_core_count_free(&e);
}

HT_HIDDEN void ht_core_disable(void)
{
	st_release(&ht_g.state, HT_G_DISABLED);
}

HT_HIDDEN void ht_core_thread_exit(void)
{
	struct ht_thread *t = &ht_self;
	t->busy++;
	if (t->epoch == ht_g.epoch && ht_g.region.hdr)
		ht_slab_retire(&ht_g.region, &t->slab);
	t->slab.slab = NULL;
	t->state = HT_THREAD_EXITING;
	t->busy--;
}

/* fork: take every lock of ours so the child never inherits one held by a thread that
 * does not exist there. Fixed order. */
HT_HIDDEN void ht_core_fork_prepare(void)
{
	ht_loader_fork_prepare();
	ht_spin_lock(&ht_g.region_lock);
	ht_spin_lock(ht_modules_lock());
	ht_spin_lock(ht_slab_fold_lock());
	ht_spin_lock(ht_live_grow_lock());
	ht_spin_lock(&ht_g.region.reserve_lock);
}

HT_HIDDEN void ht_core_fork_parent(void)
{
	ht_spin_unlock(&ht_g.region.reserve_lock);
	ht_spin_unlock(ht_live_grow_lock());
	ht_spin_unlock(ht_slab_fold_lock());
	ht_spin_unlock(ht_modules_lock());
	ht_spin_unlock(&ht_g.region_lock);
	ht_loader_fork_done();
}

HT_HIDDEN void ht_core_fork_child(void)
{
	ht_core_fork_parent();
	ht_alt_fork_child();
	ht_region_forget_pending();
	ht_live_fork_child();
	/* The parent's region is the parent's: never write it again. Its live samples are
	 * left in the table under the old epoch, and their frees here are not counted. */
	ht_g.epoch++;
	ht_region_detach(&ht_g.region);
	if (ld_relaxed(&ht_g.state) == HT_G_ACTIVE) {
		if (ht_g.cfg.follow_children) {
			ht_g.region_flags = HT_FLAG_FORK_CHILD;
			st_release(&ht_g.need_region, 1);
		}
		else
			st_relaxed(&ht_g.state, HT_G_DISABLED);
	}
	ht_self.slab.slab = NULL;
}

HT_HIDDEN void ht_core_exit(void)
{
	if (ht_g.region.hdr) {
		timeline_point(&ht_g.region, ht_now_ns(), 1);   /* the last moment */
		ht_region_mark_exited(&ht_g.region);
	}
}
