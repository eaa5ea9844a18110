/* The core without LD_PRELOAD: records through ht_core_record with known stacks, reads the
 * region back with the sidecar's reader (src/addon/reader.c), and compares. The core is
 * process-global, so each case runs in a forked child with its own configuration. */
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include "ctest.h"
#include "altstack.h"
#include "core.h"
#include "live.h"
#include "reader.h"
#include "stacks.h"

static char dir[64];

static void core_up(uint64_t rate, uint32_t max_stacks, uint32_t max_threads, uint32_t slab_entries)
{
	struct ht_config c;
	ht_config_defaults(&c);
	c.rate = rate;
	c.seed = 12345;
	c.max_stacks = max_stacks;
	c.max_threads = max_threads;
	c.slab_entries = slab_entries;
	strcpy(c.dir, dir);
	char err[256] = "";
	CHECK(ht_core_init(&c, 0, err, sizeof err) == 0, "init: %s", err);
}

static int read_region(struct htr_snapshot *s)
{
	struct htr_error e;
	int rc = htr_read_path(ht_g.region.path, 0, s, &e);
	CHECK(rc == 0, "read %s: %s", ht_g.region.path, e.msg);
	return rc;
}

/* Index of stack id in the snapshot's counters, or -1. */
static int row(const struct htr_snapshot *s, uint32_t id)
{
	for (uint32_t i = 0; i < s->counters.count; i++)
		if (s->counters.ids[i] == id)
			return (int)i;
	return -1;
}

static int run_child(void (*fn)(void))
{
	fflush(stderr);
	pid_t p = fork();
	if (p == 0) {
		fn();
		_exit(ct_failures ? 1 : 0);
	}
	int st = 0;
	waitpid(p, &st, 0);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

#define CHILD_CASE(name) \
	static void name##_body(void); \
	static void name(void) { int rc = run_child(name##_body); CHECK(rc == 0, "child exit %d", rc); } \
	static void name##_body(void)

static uint64_t stack_a[] = { 0x401000, 0x402000, 0x403000 };
static uint64_t stack_b[] = { 0x501000, 0x502000 };
#define PTR(i) ((void *)(uintptr_t)(0x10000000u + (uintptr_t)(i) * 64u))

CHILD_CASE(exact_mode_counts_every_allocation_and_free_per_stack)
{
	core_up(1, 1024, 8, 1024);
	uint32_t a = 0, b = 0;
	for (int i = 0; i < 1000; i++)
		a = ht_core_record(PTR(i), 100, stack_a, 3, 0);
	for (int i = 0; i < 500; i++)
		b = ht_core_record(PTR(1000 + i), 1000, stack_b, 2, 0);
	for (int i = 0; i < 400; i++)
		ht_core_free(PTR(i));
	ht_core_free(PTR(99999)); /* never allocated: no effect */
	CHECK(a >= HT_STACK_FIRST && b >= HT_STACK_FIRST && a != b, "ids %u %u", a, b);
	CHECK(ht_core_record(PTR(5000), 1, stack_a, 3, 0) == a, "same stack, same id");

	struct htr_snapshot s;
	if (read_region(&s))
		return;
	int ra = row(&s, a), rb = row(&s, b);
	CHECK(ra >= 0 && rb >= 0, "rows");
	if (ra < 0 || rb < 0)
		return;
	CHECK(s.counters.alloc_bytes[ra] == 100001, "a alloc bytes %llu", (unsigned long long)s.counters.alloc_bytes[ra]);
	CHECK(s.counters.alloc_objects[ra] == 1001 * HT_OBJ_ONE, "a alloc objects");
	CHECK(s.counters.free_bytes[ra] == 40000, "a free bytes %llu", (unsigned long long)s.counters.free_bytes[ra]);
	CHECK(s.counters.free_objects[ra] == 400 * HT_OBJ_ONE, "a free objects");
	CHECK(s.counters.samples[ra] == 1001, "a samples");
	CHECK(s.counters.alloc_bytes[rb] == 500000 && s.counters.free_bytes[rb] == 0, "b");
	/* The stack's frames come back as recorded. */
	int found = 0;
	for (uint32_t i = 0; i < s.stacks.count; i++)
		if (s.stacks.ids[i] == a) {
			found = 1;
			CHECK(s.stacks.depths[i] == 3 &&
			      !memcmp(&s.stacks.frames[s.stacks.frame_start[i]], stack_a, sizeof stack_a),
			      "frames of a");
		}
	CHECK(found, "stack a listed");
	CHECK(s.live.state == HT_STATE_RUNNING && s.alive == 1, "running, alive");
	CHECK(s.hdr.pid == getpid() && s.hdr.sample_rate == 1 && (s.hdr.flags & HT_FLAG_EXACT), "header");
	CHECK(s.module_count > 0, "modules scanned");
	htr_snapshot_free(&s);
}

CHILD_CASE(counts_bytes_under_the_overflow_stack_when_the_table_is_full)
{
	core_up(1, 16, 8, 1024);
	uint64_t total = 0;
	for (int i = 0; i < 100; i++) {
		uint64_t pcs[2] = { 0x700000 + (uint64_t)i * 16, 0x800000 };
		ht_core_record(PTR(i), 1000 + (size_t)i, pcs, 2, 0);
		total += 1000 + (uint64_t)i;
	}
	struct htr_snapshot s;
	if (read_region(&s))
		return;
	uint64_t sum = 0;
	for (uint32_t i = 0; i < s.counters.count; i++)
		sum += s.counters.alloc_bytes[i];
	CHECK(sum == total, "no bytes lost: %llu vs %llu", (unsigned long long)sum, (unsigned long long)total);
	int ro = row(&s, HT_STACK_OVERFLOW);
	CHECK(ro >= 0 && s.counters.alloc_bytes[ro] > 0, "overflow stack has bytes");
	CHECK(s.live.drops[HT_DROP_STACKS_FULL] > 0, "drop counter says why");
	htr_snapshot_free(&s);
}

CHILD_CASE(spills_to_the_shared_table_when_a_slab_is_full)
{
	core_up(1, 1024, 8, 16); /* 16 entries, full at 12 */
	uint64_t total = 0;
	uint32_t ids[50];
	for (int i = 0; i < 50; i++) {
		uint64_t pcs[1] = { 0x900000 + (uint64_t)i * 16 };
		for (int j = 0; j < 3; j++) {
			ids[i] = ht_core_record(PTR(i * 3 + j), 64, pcs, 1, 0);
			total += 64;
		}
	}
	struct htr_snapshot s;
	if (read_region(&s))
		return;
	uint64_t sum = 0;
	for (int i = 0; i < 50; i++) {
		int r = row(&s, ids[i]);
		CHECK(r >= 0 && s.counters.alloc_bytes[r] == 192, "stack %d: exact per stack", i);
		if (r >= 0)
			sum += s.counters.alloc_bytes[r];
	}
	CHECK(sum == total, "total");
	CHECK(s.live.drops[HT_DROP_SLAB_FULL] > 0, "slab-full counted");
	htr_snapshot_free(&s);
}

/* ---- slab reuse while a reader reads ---- */

#define NSTACKS 8
static volatile int stop_reader;
static int reader_errors;
static uint64_t reader_snaps;

static void *thread_body(void *arg)
{
	uintptr_t k = (uintptr_t)arg;
	for (int i = 0; i < 100; i++) {
		uint64_t pcs[2] = { 0xA00000 + (uint64_t)(i % NSTACKS) * 16, 0xB00000 };
		ht_core_record(PTR(k * 1000 + (uintptr_t)i), 10, pcs, 2, 0);
	}
	for (int i = 0; i < 50; i++)
		ht_core_free(PTR(k * 1000 + (uintptr_t)i));
	return NULL;
}

static void *reader_body(void *unused)
{
	(void)unused;
	uint64_t last_alloc[1024] = {0}, last_free[1024] = {0};
	while (!stop_reader) {
		struct htr_snapshot s;
		struct htr_error e;
		if (htr_read_path(ht_g.region.path, 0, &s, &e) < 0) {
			if (e.kind != HTR_E_BUSY && e.kind != HTR_E_NOT_READY) {
				fprintf(stderr, "reader: %s\n", e.msg);
				reader_errors++;
			}
			continue;
		}
		for (uint32_t i = 0; i < s.counters.count; i++) {
			uint32_t id = s.counters.ids[i];
			if (id >= 1024)
				continue;
			/* Counters only grow: a fold counted twice, then once, would show as a drop;
			 * one counted zero times would too. */
			if (s.counters.alloc_bytes[i] < last_alloc[id] || s.counters.free_bytes[i] < last_free[id]) {
				fprintf(stderr, "stack %u went down: alloc %llu -> %llu, free %llu -> %llu\n", id,
					(unsigned long long)last_alloc[id], (unsigned long long)s.counters.alloc_bytes[i],
					(unsigned long long)last_free[id], (unsigned long long)s.counters.free_bytes[i]);
				reader_errors++;
			}
			last_alloc[id] = s.counters.alloc_bytes[i];
			last_free[id] = s.counters.free_bytes[i];
		}
		reader_snaps++;
		htr_snapshot_free(&s);
	}
	return NULL;
}

CHILD_CASE(reuses_slabs_of_exited_threads_without_losing_or_double_counting)
{
	core_up(1, 1024, 4, 64); /* 4 slabs: most threads fold a retired one */
	uint64_t pcs[1] = { 0xC00000 };
	ht_core_record(PTR(999999), 1, pcs, 1, 0); /* makes the region */
	pthread_t rd;
	pthread_create(&rd, NULL, reader_body, NULL);
	const int nthreads = 400;
	for (int k = 0; k < nthreads; k += 3) {
		pthread_t t[3];
		for (int j = 0; j < 3; j++)
			pthread_create(&t[j], NULL, thread_body, (void *)(uintptr_t)(k + j + 1));
		for (int j = 0; j < 3; j++)
			pthread_join(t[j], NULL);
	}
	stop_reader = 1;
	pthread_join(rd, NULL);
	CHECK(reader_errors == 0, "%d reader errors", reader_errors);
	CHECK(reader_snaps > 10, "reader ran (%llu snapshots)", (unsigned long long)reader_snaps);

	struct htr_snapshot s;
	if (read_region(&s))
		return;
	int threads = ((nthreads + 2) / 3) * 3;
	uint64_t alloc = 0, freed = 0;
	for (uint32_t i = 0; i < s.counters.count; i++) {
		if (s.counters.ids[i] == HT_STACK_OVERFLOW)
			continue;
		alloc += s.counters.alloc_bytes[i];
		freed += s.counters.free_bytes[i];
	}
	CHECK(alloc == (uint64_t)threads * 100 * 10 + 1, "alloc %llu", (unsigned long long)alloc);
	CHECK(freed == (uint64_t)threads * 50 * 10, "free %llu", (unsigned long long)freed);
	CHECK(s.live.slab_folds > 0, "slabs were folded (%llu)", (unsigned long long)s.live.slab_folds);
	htr_snapshot_free(&s);
}

/* ---- many threads adding the same new stacks at once ---- */

#define RACE_STACKS 500
static void *race_body(void *arg)
{
	uintptr_t k = (uintptr_t)arg;
	for (int n = 0; n < RACE_STACKS; n++) {
		/* Each thread walks the stacks in its own order, so first insertions collide. */
		int i = (int)((n * 7 + k * 131) % RACE_STACKS);
		uint64_t pcs[3] = { 0xE00000 + (uint64_t)i * 16, 0xE10000 + (uint64_t)(i % 7), 0xE20000 };
		ht_core_record(PTR(k * 100000 + (uintptr_t)n), 100, pcs, 3, 0);
	}
	return NULL;
}

CHILD_CASE(threads_adding_the_same_stacks_at_once_get_one_id_each)
{
	core_up(1, 4096, 16, 1024);
	pthread_t t[8];
	for (uintptr_t k = 0; k < 8; k++)
		pthread_create(&t[k], NULL, race_body, (void *)k);
	for (int k = 0; k < 8; k++)
		pthread_join(t[k], NULL);
	struct htr_snapshot s;
	if (read_region(&s))
		return;
	/* Every one of the 500 stacks is counted under exactly one id, 8 x 100 bytes. */
	int seen[RACE_STACKS] = {0};
	int bad = 0;
	for (uint32_t i = 0; i < s.counters.count; i++) {
		uint32_t id = s.counters.ids[i];
		for (uint32_t k = 0; k < s.stacks.count; k++) {
			if (s.stacks.ids[k] != id)
				continue;
			uint64_t f0 = s.stacks.frames[s.stacks.frame_start[k]];
			int which = (int)((f0 - 0xE00000) / 16);
			if (which < 0 || which >= RACE_STACKS || s.counters.alloc_bytes[i] != 800)
				bad++;
			else
				seen[which]++;
		}
	}
	int once = 0;
	for (int i = 0; i < RACE_STACKS; i++)
		once += seen[i] == 1;
	CHECK(bad == 0, "%d ids with wrong counts", bad);
	CHECK(once == RACE_STACKS, "%d of %d stacks under exactly one id", once, RACE_STACKS);
	htr_snapshot_free(&s);
}

static uint64_t race_pcs[2] = { 0xF00000, 0xF10000 };
static uint32_t race_winner;
static void win_the_race(void)
{
	ht_stack_test_race = NULL; /* once */
	int is_new;
	race_winner = ht_stack_intern(&ht_g.region, race_pcs, 2, 0, &is_new);
}

CHILD_CASE(a_thread_that_loses_the_race_to_add_a_stack_uses_the_winners_id)
{
	core_up(1, 1024, 8, 1024);
	ht_core_record(PTR(0), 1, stack_a, 3, 0); /* makes the region */
	ht_stack_test_race = win_the_race;
	int is_new;
	uint32_t id = ht_stack_intern(&ht_g.region, race_pcs, 2, 0, &is_new);
	CHECK(race_winner >= HT_STACK_FIRST && id == race_winner && !is_new,
	      "loser gets the winner's id: %u vs %u", id, race_winner);
	/* The loser's own record is marked, so readers never list it with counts. */
	uint32_t dups = 0;
	for (uint32_t i = HT_STACK_FIRST; i < ht_g.region.hdr->stacks_used; i++)
		dups += (ht_g.region.stacks[i].flags & HT_STACK_DUPLICATE) != 0;
	CHECK(dups == 1, "one duplicate record (%u)", dups);
	CHECK(ht_stack_intern(&ht_g.region, race_pcs, 2, 0, &is_new) == race_winner, "found again");
}

CHILD_CASE(live_table_grows_and_frees_every_entry)
{
	core_up(1, 1024, 8, 1024);
	/* Rate 1 sticks every filter counter (live.h); clear them to count through it. */
	int stuck = 1;
	for (uint32_t i = 0; i < (1u << HT_LIVE_FILTER_BITS); i++)
		stuck &= ht_live_filter[i] == HT_LIVE_FILTER_STUCK;
	CHECK(stuck, "rate 1 sticks the filter");
	memset(ht_live_filter, 0, sizeof ht_live_filter);
	uint64_t pcs[1] = { 0xD00000 };
	const int n = 200000; /* well past the first generation (4096) */
	for (int i = 0; i < n; i++)
		ht_core_record(PTR(i), 8, pcs, 1, 0);
	CHECK(ht_live_count() == (uint64_t)n, "live %llu", (unsigned long long)ht_live_count());
	for (int i = 0; i < n; i++)
		ht_core_free(PTR(i));
	CHECK(ht_live_count() == 0, "all freed");
	int any = 0;
	for (int i = 0; i < n; i++)
		any |= ht_live_maybe(PTR(i));
	CHECK(!any, "filter back to empty");
	struct htr_snapshot s;
	if (read_region(&s))
		return;
	int r = row(&s, s.counters.count ? s.counters.ids[0] : 0);
	CHECK(r >= 0 && s.counters.alloc_bytes[r] == (uint64_t)n * 8 &&
	      s.counters.free_bytes[r] == (uint64_t)n * 8, "in-use 0");
	CHECK(s.live.drops[HT_DROP_LIVE_FULL] == 0, "no live drops");
	htr_snapshot_free(&s);
}

/* The filter's counters are 16 bits: one that reaches its maximum must stay there (a
 * wrap to 0 would make free() skip the table, and that block's free would never count). */
CHILD_CASE(a_full_filter_counter_sticks_and_still_sends_frees_to_the_table)
{
	core_up(1, 1024, 8, 1024);
	uint64_t pcs[1] = { 0xD00000 };
	void *a = PTR(0), *b = NULL;
	uint32_t slot = ht_live_hash((uintptr_t)a);
	for (uintptr_t i = 1; i < (1u << 24) && !b; i++)
		if (ht_live_hash((uintptr_t)PTR(i)) == slot)
			b = PTR(i);
	CHECK(b != NULL, "a second pointer in the same slot");
	if (!b)
		return;
	ht_live_filter[slot] = HT_LIVE_FILTER_STUCK - 1;
	ht_core_record(a, 8, pcs, 1, 0);
	CHECK(ht_live_filter[slot] == HT_LIVE_FILTER_STUCK, "counter at its maximum (%u)",
	      ht_live_filter[slot]);
	ht_core_record(b, 8, pcs, 1, 0);
	CHECK(ht_live_filter[slot] == HT_LIVE_FILTER_STUCK, "no wrap (%u)", ht_live_filter[slot]);
	ht_core_free(a);
	CHECK(ht_live_filter[slot] == HT_LIVE_FILTER_STUCK, "stuck after a free (%u)",
	      ht_live_filter[slot]);
	CHECK(ht_live_maybe(b), "b still flagged");
	ht_core_free(b);
	CHECK(ht_live_count() == 0, "both frees found their entries");
	struct htr_snapshot s;
	if (read_region(&s))
		return;
	int r = row(&s, s.counters.count ? s.counters.ids[0] : 0);
	CHECK(r >= 0 && s.counters.free_bytes[r] == 16, "both frees counted");
	htr_snapshot_free(&s);
}

CHILD_CASE(a_fork_child_writes_its_own_region_and_ignores_the_parents_frees)
{
	core_up(1, 1024, 8, 1024);
	for (int i = 0; i < 10; i++)
		ht_core_record(PTR(i), 100, stack_a, 3, 0);
	char parent_path[sizeof ht_g.region.path];
	strcpy(parent_path, ht_g.region.path);
	/* What the atfork handlers do in a real fork, here in the same process. */
	ht_core_fork_prepare();
	ht_core_fork_child();
	for (int i = 0; i < 10; i++)
		ht_core_free(PTR(i));  /* the parent's allocations */
	ht_core_record(PTR(100), 7, stack_b, 2, 0);
	CHECK(strcmp(parent_path, ht_g.region.path) != 0, "a new region");
	struct htr_snapshot s;
	if (read_region(&s))
		return;
	CHECK(s.hdr.flags & HT_FLAG_FORK_CHILD, "marked as a fork child");
	uint64_t freed = 0, alloc = 0;
	for (uint32_t i = 0; i < s.counters.count; i++) {
		freed += s.counters.free_bytes[i];
		alloc += s.counters.alloc_bytes[i];
	}
	CHECK(freed == 0 && alloc == 7, "child counts only its own: alloc %llu free %llu",
	      (unsigned long long)alloc, (unsigned long long)freed);
	htr_snapshot_free(&s);
	struct htr_error e;
	CHECK(htr_read_path(parent_path, 0, &s, &e) == 0, "parent region intact: %s", e.msg);
	uint64_t palloc = 0;
	for (uint32_t i = 0; i < s.counters.count; i++)
		palloc += s.counters.alloc_bytes[i];
	CHECK(palloc == 1000, "parent region untouched by the child: %llu", (unsigned long long)palloc);
	htr_snapshot_free(&s);
}

CHILD_CASE(a_sample_point_hit_inside_heaptap_redraws_instead_of_sampling)
{
	core_up(524288, 1024, 8, 1024);
	ht_core_record(PTR(0), 1u << 30, stack_a, 3, 0); /* sets the thread and region up */
	ht_self.countdown = 0;
	ht_self.busy = 1;
	ht_core_alloc(PTR(1), 100);
	ht_self.busy = 0;
	CHECK(ht_self.countdown > 0, "interval redrawn");
	struct htr_snapshot s;
	if (read_region(&s))
		return;
	CHECK(s.live.drops[HT_DROP_RECURSION] == 1, "recursion counted");
	uint64_t samples = 0;
	for (uint32_t i = 0; i < s.counters.count; i++)
		samples += s.counters.samples[i];
	CHECK(samples == 1, "only the first allocation sampled: %llu", (unsigned long long)samples);
	htr_snapshot_free(&s);
}

CHILD_CASE(the_control_area_pauses_and_changes_the_rate)
{
	core_up(1, 1024, 8, 1024);
	ht_core_record(PTR(0), 10, stack_a, 3, 0);
	struct htr_error e;
	CHECK(htr_write_control(ht_g.region.path, 1, 1, 0, 0, &e) == 0, "%s", e.msg);
	for (int i = 1; i <= 5; i++)
		CHECK(ht_core_record(PTR(i), 10, stack_a, 3, 0) == 0, "paused: not sampled");
	CHECK(htr_write_control(ht_g.region.path, 1, 0, 1, 4096, &e) == 0, "%s", e.msg);
	struct htr_snapshot s;
	ht_core_record(PTR(6), 1u << 20, stack_a, 3, 0);
	if (read_region(&s))
		return;
	CHECK(s.live.drops[HT_DROP_PAUSED] == 5, "paused samples %llu", (unsigned long long)s.live.drops[HT_DROP_PAUSED]);
	CHECK(s.live.rate_now == 4096 && s.live.paused_now == 0, "rate acknowledged: %llu",
	      (unsigned long long)s.live.rate_now);
	htr_snapshot_free(&s);
}

CHILD_CASE(an_unwritable_directory_is_a_clear_error)
{
	struct ht_config c;
	ht_config_defaults(&c);
	strcpy(c.dir, "/proc/heaptap-cannot-exist");
	char err[256] = "";
	CHECK(ht_core_init(&c, 0, err, sizeof err) < 0, "init fails");
	CHECK(strstr(err, "/proc/heaptap-cannot-exist") != NULL, "message names the dir: %s", err);
}

CHILD_CASE(missing_parents_of_the_directory_are_created)
{
	struct ht_config c;
	ht_config_defaults(&c);
	snprintf(c.dir, sizeof c.dir, "%s/a/b/c", dir);
	c.rate = 1;
	char err[256] = "";
	CHECK(ht_core_init(&c, 0, err, sizeof err) == 0, "%s", err);
	ht_core_record(PTR(0), 10, stack_a, 3, 0);
	struct stat st;
	CHECK(stat(c.dir, &st) == 0 && S_ISDIR(st.st_mode) && (st.st_mode & 0777) == 0700, "made 0700");
	CHECK(strncmp(ht_g.region.path, c.dir, strlen(c.dir)) == 0, "region inside it");
	char p[512];
	unlink(ht_g.region.path);
	snprintf(p, sizeof p, "%s/a/b/c", dir); rmdir(p);
	snprintf(p, sizeof p, "%s/a/b", dir); rmdir(p);
	snprintf(p, sizeof p, "%s/a", dir); rmdir(p);
}

CHILD_CASE(region_files_are_private_unless_a_mode_is_given)
{
	setenv("HEAPTAP_FILE_MODE", "0640", 1);
	struct ht_config c;
	ht_config_defaults(&c);
	char err[256] = "";
	CHECK(ht_config_from_env(&c, err, sizeof err) == 0, "%s", err);
	CHECK(c.file_mode == 0640, "mode parsed");
	c.rate = 1;
	strcpy(c.dir, dir);
	CHECK(ht_core_init(&c, 0, err, sizeof err) == 0, "%s", err);
	ht_core_record(PTR(0), 10, stack_a, 3, 0);
	struct stat st;
	CHECK(stat(ht_g.region.path, &st) == 0 && (st.st_mode & 0777) == 0640, "mode %o", st.st_mode & 0777);
	/* Group or others' write: ignored with a warning, the default kept, profiling on. */
	const char *writable[] = { "0666", "0660", "0622", "0777", "0602" };
	for (size_t i = 0; i < sizeof writable / sizeof *writable; i++) {
		setenv("HEAPTAP_FILE_MODE", writable[i], 1);
		ht_config_defaults(&c);
		CHECK(ht_config_from_env(&c, err, sizeof err) == 0, "%s: not fatal: %s", writable[i], err);
		CHECK(c.file_mode == 0600, "%s: the default 0600 kept (got %o)", writable[i], c.file_mode);
		CHECK(strstr(c.warning, "HEAPTAP_FILE_MODE") && strstr(c.warning, "write"), "%s: warned: '%s'", writable[i], c.warning);
	}
	setenv("HEAPTAP_FILE_MODE", "0200", 1);
	CHECK(ht_config_from_env(&c, err, sizeof err) < 0 && strstr(err, "HEAPTAP_FILE_MODE"), "0200 refused: %s", err);
	setenv("HEAPTAP_FILE_MODE", "0644", 1);
	ht_config_defaults(&c);
	CHECK(ht_config_from_env(&c, err, sizeof err) == 0 && c.file_mode == 0644 && !c.warning[0], "0644 taken");
	setenv("HEAPTAP_FILE_MODE", "0640", 1);
	setenv("HEAPTAP_SAMPLE_RATE", "12k", 1);
	CHECK(ht_config_from_env(&c, err, sizeof err) == 0 && c.rate == 12288, "12k");
	setenv("HEAPTAP_SAMPLE_RATE", "-1", 1);
	CHECK(ht_config_from_env(&c, err, sizeof err) < 0 && strstr(err, "HEAPTAP_SAMPLE_RATE"), "-1 refused");
}

/* ---- the peak and the timeline (HT_FEATURE_PEAK, HT_FEATURE_TIMELINE) ---- */

static uint64_t peak_of(const struct htr_snapshot *s, uint32_t id)
{
	int r = row(s, id);
	return r < 0 ? 0 : s->counters.peak_bytes[r];
}

CHILD_CASE(the_peak_is_exact_at_rate_1_and_its_stacks_sum_to_it)
{
	core_up(1, 1024, 8, 1024);
	uint32_t a = 0, b = 0;
	for (int i = 0; i < 10; i++)
		a = ht_core_record(PTR(i), 1000, stack_a, 3, 0);
	for (int i = 0; i < 4; i++)
		b = ht_core_record(PTR(100 + i), 2000, stack_b, 2, 0);
	uint64_t t0 = ht_now_ns();
	ht_core_record(PTR(104), 2000, stack_b, 2, 0);   /* the peak: 10000 + 10000 */
	uint64_t t1 = ht_now_ns();
	for (int i = 0; i < 10; i++)
		ht_core_free(PTR(i));
	for (int i = 0; i < 3; i++)
		ht_core_record(PTR(200 + i), 1000, stack_b, 2, 0);   /* 13000 now, below the peak */

	struct htr_snapshot s;
	if (read_region(&s))
		return;
	CHECK(s.hdr.features & HT_FEATURE_PEAK, "features %u", s.hdr.features);
	CHECK(s.peak.bytes == 20000, "peak %llu", (unsigned long long)s.peak.bytes);
	CHECK(s.peak.ns >= t0 && s.peak.ns <= t1, "peak time %llu not in [%llu, %llu]",
	      (unsigned long long)s.peak.ns, (unsigned long long)t0, (unsigned long long)t1);
	CHECK(s.peak.settled, "settled");
	CHECK(peak_of(&s, a) == 10000 && peak_of(&s, b) == 10000, "per stack %llu %llu",
	      (unsigned long long)peak_of(&s, a), (unsigned long long)peak_of(&s, b));
	int ra = row(&s, a);
	CHECK(ra >= 0 && s.counters.peak_objects[ra] == 10 * HT_OBJ_ONE, "objects at the peak");
	CHECK(s.peak_stack_bytes == s.peak.bytes, "stacks sum %llu", (unsigned long long)s.peak_stack_bytes);
	CHECK(s.live.inuse_bytes == 13000 && s.inuse_bytes == 13000, "in use now %lld / %llu",
	      (long long)s.live.inuse_bytes, (unsigned long long)s.inuse_bytes);
	CHECK(s.live.alloc_bytes == 23000, "allocated %llu", (unsigned long long)s.live.alloc_bytes);
	/* the first sampled event makes a point (no earlier one to be near) */
	CHECK(s.timeline.count >= 1 && s.timeline.ns[0] > 0 && s.timeline.rss_bytes[0] > 0,
	      "timeline %u points", s.timeline.count);
	htr_snapshot_free(&s);
	/* at exit a last point, whatever the gap */
	uint64_t before = ht_g.region.hdr->timeline_next;
	ht_core_exit();
	if (read_region(&s))
		return;
	CHECK(s.live.timeline_next == before + 1 && s.timeline.count >= 1 &&
	      s.timeline.inuse_bytes[s.timeline.count - 1] == 13000, "exit point");
	htr_snapshot_free(&s);
}

static void *peak_thread(void *arg)
{
	(void)arg;
	uint64_t pcs[2] = { 0xD00000, 0xD10000 };
	for (int i = 0; i < 50; i++)
		ht_core_record(PTR(300000 + i), 1000, pcs, 2, 0);
	for (int i = 0; i < 20; i++)
		ht_core_free(PTR(300000 + i));
	return NULL;
}

static void *late_thread(void *arg)
{
	(void)arg;
	uint64_t pcs[2] = { 0xD00000, 0xD10000 };
	ht_core_record(PTR(400000), 100, pcs, 2, 0);
	return NULL;
}

CHILD_CASE(a_slab_folded_after_the_peak_carries_what_it_held_at_the_peak)
{
	core_up(1, 1024, 2, 1024); /* two slabs: the main thread's and one more */
	uint32_t a = ht_core_record(PTR(1), 5000, stack_a, 3, 0);
	pthread_t t;
	pthread_create(&t, NULL, peak_thread, NULL);   /* peak 5000 + 50000, then frees 20000 */
	pthread_join(t, NULL);
	pthread_create(&t, NULL, late_thread, NULL);   /* no free slab: folds the first thread's */
	pthread_join(t, NULL);
	struct htr_snapshot s;
	if (read_region(&s))
		return;
	CHECK(s.live.slab_folds >= 1, "folded %llu", (unsigned long long)s.live.slab_folds);
	uint64_t pcs[2] = { 0xD00000, 0xD10000 };
	uint32_t c = ht_core_record(PTR(500000), 1, pcs, 2, 0);
	ht_core_free(PTR(500000));
	htr_snapshot_free(&s);
	if (read_region(&s))
		return;
	CHECK(s.peak.bytes == 55000, "peak %llu", (unsigned long long)s.peak.bytes);
	CHECK(peak_of(&s, c) == 50000 && peak_of(&s, a) == 5000, "per stack c %llu a %llu",
	      (unsigned long long)peak_of(&s, c), (unsigned long long)peak_of(&s, a));
	CHECK(s.peak_stack_bytes == 55000, "sum %llu", (unsigned long long)s.peak_stack_bytes);
	int rc = row(&s, c);
	CHECK(rc >= 0 && s.counters.inuse_bytes[rc] == 30100, "c in use now");
	htr_snapshot_free(&s);
}

static volatile int churn_stop;
static void *churn_thread(void *arg)
{
	uintptr_t k = (uintptr_t)arg;
	for (int round = 0; round < 300; round++) {
		for (int i = 0; i < 16; i++) {
			uint64_t pcs[2] = { 0xF00000 + (uint64_t)(i % 4) * 16, 0xF10000 + k };
			ht_core_record(PTR(600000 + k * 1000 + (uintptr_t)i), 64 + (size_t)i, pcs, 2, 0);
		}
		for (int i = 0; i < 16; i++)
			ht_core_free(PTR(600000 + k * 1000 + (uintptr_t)i));
	}
	return NULL;
}

static int peak_errors, peak_snaps;
static void *peak_reader(void *arg)
{
	(void)arg;
	uint64_t last_peak = 0, last_gen = 0;
	while (!churn_stop) {
		struct htr_snapshot s;
		struct htr_error e;
		if (htr_read_path(ht_g.region.path, 0, &s, &e) < 0)
			continue;
		peak_snaps++;
		if (s.peak.bytes < last_peak || s.peak.gen < last_gen) {
			fprintf(stderr, "peak went down: %llu -> %llu\n", (unsigned long long)last_peak,
				(unsigned long long)s.peak.bytes);
			peak_errors++;
		}
		/* at most 3 threads x 16 blocks of < 80 bytes, plus the 10 */
		if (s.peak.bytes > 3 * 16 * 80 + 10 || s.peak_stack_bytes > 3 * 16 * 80 + 10) {
			fprintf(stderr, "peak %llu (stacks %llu) above what was ever in use\n",
				(unsigned long long)s.peak.bytes, (unsigned long long)s.peak_stack_bytes);
			peak_errors++;
		}
		last_peak = s.peak.bytes;
		last_gen = s.peak.gen;
		htr_snapshot_free(&s);
	}
	return NULL;
}

CHILD_CASE(under_threads_and_folds_the_peak_only_grows_and_a_later_single_threaded_one_is_exact)
{
	core_up(1, 1024, 3, 64); /* 3 slabs: the main thread's and two for waves of 3 threads */
	ht_core_record(PTR(7), 10, stack_a, 3, 0);
	pthread_t rd;
	pthread_create(&rd, NULL, peak_reader, NULL);
	for (int wave = 0; wave < 4; wave++) {  /* each wave after the first folds retired slabs */
		pthread_t th[3];
		for (uintptr_t k = 0; k < 3; k++)
			pthread_create(&th[k], NULL, churn_thread, (void *)k);
		for (int k = 0; k < 3; k++)
			pthread_join(th[k], NULL);
	}
	churn_stop = 1;
	pthread_join(rd, NULL);
	CHECK(peak_errors == 0 && peak_snaps > 0, "%d errors in %d snapshots", peak_errors, peak_snaps);
	/* One thread now: a spike above anything before is a peak whose rows are exact. */
	uint32_t b = 0;
	for (int i = 0; i < 100; i++)
		b = ht_core_record(PTR(800000 + i), 1000, stack_b, 2, 0);
	for (int i = 0; i < 100; i++)
		ht_core_free(PTR(800000 + i));
	struct htr_snapshot s;
	if (read_region(&s))
		return;
	CHECK(s.peak.bytes == 100010, "peak %llu", (unsigned long long)s.peak.bytes);
	CHECK(peak_of(&s, b) == 100000, "spike %llu", (unsigned long long)peak_of(&s, b));
	CHECK(s.peak_stack_bytes == 100010, "sum %llu", (unsigned long long)s.peak_stack_bytes);
	CHECK(s.live.slab_folds > 0, "folds");
	htr_snapshot_free(&s);
}

static void cleanup(void)
{
	DIR *d = opendir(dir);
	if (!d)
		return;
	struct dirent *e;
	char p[512];
	while ((e = readdir(d)))
		if (e->d_name[0] != '.' || strlen(e->d_name) > 2) {
			snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
			unlink(p);
		}
	closedir(d);
	rmdir(dir);
}

/* The sampling-stack pool (altstack.c): one flag per slot, a thread's last slot tried
 * first. A slot handed to two samples at once would have them overwrite each other's
 * frames; a full pool must answer NULL at once (the sample is dropped), never wait. */
static int alt_other_slot = -2;
static void *alt_other(void *unused)
{
	(void)unused;
	int s = -1;
	if (ht_alt_take(&s))
		alt_other_slot = s;
	else
		alt_other_slot = -1;
	return NULL;
}

CHILD_CASE(sampling_stacks_are_never_handed_out_twice_and_run_out_without_waiting)
{
	ht_alt_init();
	int slot[HT_ALT_SLOTS];
	uint8_t *top[HT_ALT_SLOTS];
	uint64_t seen = 0;
	int all = 1;
	for (int i = 0; i < HT_ALT_SLOTS; i++) {
		top[i] = ht_alt_take(&slot[i]);
		if (!top[i] || slot[i] < 0 || slot[i] >= HT_ALT_SLOTS || (seen >> slot[i] & 1)) {
			all = 0;
			break;
		}
		seen |= 1ull << slot[i];
		top[i][-1] = (uint8_t)i;   /* mapped and writable */
	}
	CHECK(all && seen == ~0ull, "64 distinct slots (%llx)", (unsigned long long)seen);
	if (!all)
		return;
	int s = -1;
	CHECK(ht_alt_take(&s) == NULL, "a full pool gives NULL");
	ht_alt_give(slot[37]);
	CHECK(ht_alt_take(&s) == top[37] && s == slot[37], "the freed slot is taken again (%d)", s);
	ht_alt_give(slot[37]);
	ht_alt_give(slot[5]);
	ht_alt_take(&s);
	CHECK(s == slot[37], "the thread's last slot first (%d)", s);
	ht_alt_take(&s);
	CHECK(s == slot[5], "then the free one (%d)", s);
	CHECK(ht_alt_take(&s) == NULL, "full again");
	/* Another thread: its own last slot (none yet: 0) is taken, so it finds the free one. */
	ht_alt_give(slot[50]);
	pthread_t th;
	CHECK(pthread_create(&th, NULL, alt_other, NULL) == 0, "thread");
	pthread_join(th, NULL);
	CHECK(alt_other_slot == slot[50], "another thread gets the free slot (%d)", alt_other_slot);
	CHECK(ht_alt_take(&s) == NULL, "and holds it");
	for (int i = 0; i < HT_ALT_SLOTS; i++)
		CHECK(top[i][-1] == (uint8_t)i, "slot %d's stack kept its byte", i);
}

static const struct ct_case cases[] = {
	CT_CASE(exact_mode_counts_every_allocation_and_free_per_stack),
	CT_CASE(counts_bytes_under_the_overflow_stack_when_the_table_is_full),
	CT_CASE(spills_to_the_shared_table_when_a_slab_is_full),
	CT_CASE(reuses_slabs_of_exited_threads_without_losing_or_double_counting),
	CT_CASE(threads_adding_the_same_stacks_at_once_get_one_id_each),
	CT_CASE(a_thread_that_loses_the_race_to_add_a_stack_uses_the_winners_id),
	CT_CASE(live_table_grows_and_frees_every_entry),
	CT_CASE(a_full_filter_counter_sticks_and_still_sends_frees_to_the_table),
	CT_CASE(a_fork_child_writes_its_own_region_and_ignores_the_parents_frees),
	CT_CASE(a_sample_point_hit_inside_heaptap_redraws_instead_of_sampling),
	CT_CASE(the_control_area_pauses_and_changes_the_rate),
	CT_CASE(an_unwritable_directory_is_a_clear_error),
	CT_CASE(missing_parents_of_the_directory_are_created),
	CT_CASE(region_files_are_private_unless_a_mode_is_given),
	CT_CASE(the_peak_is_exact_at_rate_1_and_its_stacks_sum_to_it),
	CT_CASE(a_slab_folded_after_the_peak_carries_what_it_held_at_the_peak),
	CT_CASE(under_threads_and_folds_the_peak_only_grows_and_a_later_single_threaded_one_is_exact),
	CT_CASE(sampling_stacks_are_never_handed_out_twice_and_run_out_without_waiting),
};

int main(void)
{
	strcpy(dir, "/tmp/heaptap-test-core-XXXXXX");
	if (!mkdtemp(dir))
		return 2;
	int rc = ct_run(__FILE__, cases, (int)(sizeof cases / sizeof cases[0]));
	cleanup();
	return rc;
}
