/* SPDX-License-Identifier: Apache-2.0 */
/*
 * C test of the region reader, meant to run under AddressSanitizer and UBSan
 * (`make -C src/addon check`): the JS tests show that hostile files do not crash the
 * addon; this shows that the reader does not read or write outside its own buffers or hit
 * undefined behaviour while it rejects them, which a crash-only test cannot see.
 *
 *   test_reader [SEED [ROUNDS [RESIZE_ROUNDS]]]
 *
 * It builds a small valid region, checks the exact snapshot, then runs seeded single-bit
 * flips and hostile words over the whole file through htr_read_path(), checking the
 * invariants of every snapshot that is returned. Then the file changing size while it is
 * read (issue 10): a thread that truncates and regrows the file as reads run (no SIGBUS
 * may escape), a sparse file that claims 20 million stacks on holes (no hole faulted in,
 * memory bounded), the data cap, and the seeded mutants again with a thread resizing each
 * one while it is read. Prints the fuzz figures (mutants, reads, faults caught, hangs,
 * worst read, max RSS) and "N passed, 0 failed" at the end.
 *
 * HEAPTAP_MAX_REGION_BYTES is set to 8 MiB here (before the first read) so that the cap
 * can be tested with a small file.
 */
#define _GNU_SOURCE
#include "reader.h"
#include "../../test/fixtures/region_build.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static int failures, passes;

#define CHECK(cond, ...)                                                                  \
	do {                                                                              \
		if (cond) {                                                               \
			passes++;                                                         \
		} else {                                                                  \
			failures++;                                                       \
			fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);   \
			fprintf(stderr, __VA_ARGS__);                                     \
			fputc('\n', stderr);                                              \
		}                                                                         \
	} while (0)

enum { STACKS = 32, FRAMES = 256, SLABS = 3, SLAB_ENTRIES = 8, MODULES = 4, PATHS = 4096 };


/* A valid region: stacks 2..4 (4 is a duplicate), one module, an active and a free slab,
 * shared counts. Expected totals: stack 2 = 30 bytes, stack 3 = 7 bytes, overflow = 5.
 * With features (HT_FEATURE_PEAK | HT_FEATURE_TIMELINE): peak gen 2; stack 2's slab row
 * held 4 bytes at the peak (ht_peak of gen 2), its shared row is as it was (gen 1): 4 + 20;
 * stack 3 as it is (7); the overflow row held 1 (gen 2). A timeline of 5 points in a ring
 * of 4 (points 1..4). */
static unsigned char *build(size_t *len, int features)
{
	struct ht_header h;
	memset(&h, 0, sizeof h);
	uint64_t at = HT_HEADER_BYTES;
	rb_section(&h.modules, &at, MODULES, sizeof(struct ht_module));
	rb_section(&h.paths, &at, PATHS, 1);
	rb_section(&h.stack_index, &at, 64, 4);
	rb_section(&h.stacks, &at, STACKS, sizeof(struct ht_stack));
	rb_section(&h.frames, &at, FRAMES, 8);
	rb_section(&h.shared, &at, STACKS, sizeof(struct ht_counters));
	size_t per_entry = sizeof(struct ht_slab_entry) + (features ? sizeof(struct ht_peak) : 0);
	rb_section(&h.slabs, &at, SLABS, sizeof(struct ht_slab_header) + SLAB_ENTRIES * per_entry);
	if (features) {
		h.features = HT_FEATURE_PEAK | HT_FEATURE_TIMELINE;
		rb_section(&h.timeline, &at, 4, sizeof(struct ht_timeline_point));
		rb_section(&h.shared_peak, &at, STACKS, sizeof(struct ht_peak));
		h.peak_gen = 2;
		h.peak_bytes = 30;
		h.peak_ns = 77;
		h.inuse_bytes = 25;
		h.timeline_next = 5;
	}
	rb_identity(&h, at);
	h.arch = htr_host_arch();
	h.slab_entries = SLAB_ENTRIES;
	h.max_depth = 16;
	h.state = HT_STATE_RUNNING;
	h.stacks_used = 5;
	h.modules_used = 1;
	strcpy(h.exe, "/bin/true");
	strcpy(h.service, "svc");
	unsigned char *b = calloc(1, at);
	memcpy(b, &h, sizeof h);
	struct ht_stack *st = (struct ht_stack *)(b + h.stacks.offset);
	uint64_t *fr = (uint64_t *)(b + h.frames.offset);
	st[1] = (struct ht_stack){1, 0, 0, HT_STACK_READY | HT_STACK_SYNTHETIC};
	for (int i = 0; i < 6; i++)
		fr[i] = 0x1000 + (uint64_t)i;
	st[2] = (struct ht_stack){11, 0, 3, HT_STACK_READY};
	st[3] = (struct ht_stack){12, 3, 3, HT_STACK_READY | HT_STACK_TRUNCATED};
	st[4] = (struct ht_stack){11, 0, 3, HT_STACK_READY | HT_STACK_DUPLICATE};
	struct ht_module *m = (struct ht_module *)(b + h.modules.offset);
	strcpy((char *)b + h.paths.offset, "/bin/true");
	*m = (struct ht_module){HT_MODULE_LOADED, HT_MODULE_MAIN, 0, 9, 0, 0x1000, 0x2000, 0, 1, 0,
				4, 0, {1, 2, 3, 4}};
	struct ht_slab_header *s0 = (struct ht_slab_header *)(b + h.slabs.offset);
	s0->state = HT_SLAB_ACTIVE;
	struct ht_slab_entry *e = (struct ht_slab_entry *)(s0 + 1);
	e[ht_slab_slot(2, SLAB_ENTRIES)] = (struct ht_slab_entry){2, 0, {HT_OBJ_ONE, 10, 0, 0, 1}};
	e[ht_slab_slot(3, SLAB_ENTRIES)] = (struct ht_slab_entry){3, 0, {HT_OBJ_ONE, 7, 0, 0, 1}};
	struct ht_slab_header *s1 = (struct ht_slab_header *)(b + h.slabs.offset + h.slabs.entry_bytes);
	s1->state = HT_SLAB_FREE;
	e = (struct ht_slab_entry *)(s1 + 1);
	e[0] = (struct ht_slab_entry){2, 0, {HT_OBJ_ONE, 1000, 0, 0, 1}};
	struct ht_counters *sh = (struct ht_counters *)(b + h.shared.offset);
	sh[2] = (struct ht_counters){HT_OBJ_ONE, 20, 0, 0, 1};
	sh[1] = (struct ht_counters){HT_OBJ_ONE, 5, 0, 0, 1};
	if (features) {
		struct ht_peak *pk = (struct ht_peak *)((unsigned char *)(s0 + 1) +
							SLAB_ENTRIES * sizeof(struct ht_slab_entry));
		pk[ht_slab_slot(2, SLAB_ENTRIES)] = (struct ht_peak){2, 4, HT_OBJ_ONE};
		pk[ht_slab_slot(3, SLAB_ENTRIES)] = (struct ht_peak){1, 99, 99};
		struct ht_peak *sp = (struct ht_peak *)(b + h.shared_peak.offset);
		sp[2] = (struct ht_peak){1, 999, 999};
		sp[1] = (struct ht_peak){2, 1, HT_OBJ_ONE};
		struct ht_timeline_point *tl = (struct ht_timeline_point *)(b + h.timeline.offset);
		for (uint64_t n = 0; n < 5; n++)
			tl[n % 4] = (struct ht_timeline_point){1000 + n, (int64_t)n, 10 * n, 4096};
	}
	*len = at;
	return b;
}

static int write_file(const char *path, const unsigned char *b, size_t len)
{
	FILE *f = fopen(path, "wb");
	if (!f)
		return -1;
	size_t w = fwrite(b, 1, len, f);
	return fclose(f) == 0 && w == len ? 0 : -1;
}

/* Invariants of any snapshot the reader returns, however hostile the file. */
static void check_invariants(const struct htr_snapshot *s, const char *what)
{
	uint64_t frames = 0;
	for (uint32_t i = 0; i < s->stacks.count; i++) {
		CHECK(s->stacks.frame_start[i] == frames, "%s: frame_start", what);
		CHECK(s->stacks.depths[i] <= s->hdr.max_depth, "%s: depth", what);
		CHECK(i == 0 || s->stacks.ids[i] > s->stacks.ids[i - 1], "%s: stack order", what);
		frames += s->stacks.depths[i];
	}
	CHECK(frames == s->stacks.nframes, "%s: nframes", what);
	CHECK(frames <= s->hdr.frames.capacity, "%s: frames beyond the pool", what);
	for (uint32_t i = 0; i < s->counters.count; i++) {
		CHECK(s->counters.ids[i] > 0 && s->counters.ids[i] < s->hdr.stacks.capacity,
		      "%s: counter id", what);
		CHECK(i == 0 || s->counters.ids[i] > s->counters.ids[i - 1], "%s: counter order", what);
	}
	uint64_t inuse = 0;
	for (uint32_t i = 0; i < s->counters.count; i++) {
		uint64_t a = s->counters.alloc_bytes[i], f = s->counters.free_bytes[i];
		CHECK(s->counters.inuse_bytes[i] == (a > f ? a - f : 0), "%s: in use rule", what);
		CHECK((s->hdr.features & HT_FEATURE_PEAK) || s->counters.peak_bytes[i] == 0,
		      "%s: peak without the feature", what);
		inuse = inuse + s->counters.inuse_bytes[i] < inuse ? UINT64_MAX
								  : inuse + s->counters.inuse_bytes[i];
	}
	CHECK(inuse == s->inuse_bytes, "%s: process in use", what);
	const struct htr_timeline *tl = &s->timeline;
	CHECK((s->hdr.features & HT_FEATURE_TIMELINE) || tl->count == 0, "%s: timeline", what);
	CHECK(tl->count <= s->hdr.timeline.capacity || !(s->hdr.features & HT_FEATURE_TIMELINE),
	      "%s: timeline count", what);
	for (uint32_t i = 0; i < tl->count; i++) {
		CHECK(tl->ns[i] != 0, "%s: timeline ns", what);
		CHECK(i == 0 || (tl->index[i] > tl->index[i - 1] && tl->ns[i] >= tl->ns[i - 1]),
		      "%s: timeline order", what);
	}
	for (uint32_t i = 0; i < s->module_count; i++) {
		CHECK(strlen(s->modules[i].path) == s->modules[i].path_len, "%s: path length", what);
		CHECK(s->modules[i].build_id_len <= HTR_BUILD_ID_MAX, "%s: build id", what);
	}
}

static uint64_t rng_state;
static uint64_t rnd(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

#if defined(__SANITIZE_ADDRESS__)
#define ASAN_NOTE " (under ASan)"
#else
#define ASAN_NOTE ""
#endif

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static long max_rss_kb(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return ru.ru_maxrss;
}

static long rss_kb(void)
{
	FILE *f = fopen("/proc/self/statm", "r");
	long size = 0, res = 0;
	if (f) {
		if (fscanf(f, "%ld %ld", &size, &res) != 2)
			res = 0;
		fclose(f);
	}
	return res * (sysconf(_SC_PAGESIZE) / 1024);
}

/* A writer that keeps changing the file's size while reads run: truncates it to a random
 * length (8 KiB, the header only, or anything below the region's size), grows it back to
 * the full length and rewrites the content, as a hostile neighbour holding the file can. */
struct resizer {
	const char *path;
	const unsigned char *content;
	size_t len;
	uint64_t seed;
	volatile int stop;
	long changes;
};

static void *resize_loop(void *arg)
{
	struct resizer *z = arg;
	int fd = open(z->path, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return NULL;
	uint64_t x = z->seed | 1;
	while (!z->stop) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		off_t to = (x & 3) == 0 ? 8192 : (x & 3) == 1 ? 0 : (off_t)((x >> 8) % z->len);
		if (ftruncate(fd, to) != 0)
			break;
		if (ftruncate(fd, (off_t)z->len) != 0)
			break;
		if (pwrite(fd, z->content, z->len, 0) != (ssize_t)z->len)
			break;
		z->changes++;
	}
	close(fd);
	return NULL;
}

/* A region file of about 1.35 GB apparent that holds a few pages of data: the stack
 * records and the shared table claim 20 million entries each (stacks_used too), all
 * holes but the first page of each, which hold the small region's stacks and rows. */
static int write_sparse(const char *path, const unsigned char *base, off_t *apparent)
{
	const struct ht_header *bh = (const struct ht_header *)(const void *)base;
	struct ht_header h = *bh;
	const uint32_t n = 20u * 1000 * 1000;
	uint64_t at = h.slabs.offset + h.slabs.bytes; /* after the small region's sections */
	h.stacks.offset = at;
	h.stacks.capacity = n;
	h.stacks.bytes = rb_page_up((uint64_t)n * sizeof(struct ht_stack));
	at += h.stacks.bytes;
	h.shared.offset = at;
	h.shared.capacity = n;
	h.shared.bytes = rb_page_up((uint64_t)n * sizeof(struct ht_counters));
	at += h.shared.bytes;
	h.file_bytes = at;
	h.stacks_used = n;
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return -1;
	int rc = -1;
	/* header, modules, paths, index, frames, slabs as they are; stacks and shared moved */
	if (ftruncate(fd, (off_t)at) != 0 ||
	    pwrite(fd, base, bh->slabs.offset + bh->slabs.bytes, 0) < 0 ||
	    pwrite(fd, &h, sizeof h, 0) != (ssize_t)sizeof h ||
	    pwrite(fd, base + bh->stacks.offset, 4096, (off_t)h.stacks.offset) != 4096 ||
	    pwrite(fd, base + bh->shared.offset, 4096, (off_t)h.shared.offset) != 4096)
		goto out;
	*apparent = (off_t)at;
	rc = 0;
out:
	close(fd);
	return rc;
}

static long long file_blocks(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 ? (long long)st.st_blocks : -1;
}

int main(int argc, char **argv)
{
	/* before the first read: the reader takes the cap once */
	setenv("HEAPTAP_MAX_REGION_BYTES", "8388608", 1);
	rng_state = argc > 1 ? strtoull(argv[1], NULL, 0) | 1 : 20261122;
	long rounds = argc > 2 ? atol(argv[2]) : 4000;
	long resize_rounds = argc > 3 ? atol(argv[3]) : 1500;
	/* on tmpfs when there is one: thousands of rewrites, and where regions really live */
	char path[64];
	snprintf(path, sizeof path, "%s/heaptap-test-reader-XXXXXX",
		 access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp");
	int fd = mkstemp(path);
	if (fd < 0) {
		perror("mkstemp");
		return 2;
	}
	close(fd);

	size_t len;
	unsigned char *base = build(&len, 0);
	struct htr_snapshot s;
	struct htr_error err;

	/* a region with the peak and the timeline reads back exactly */
	size_t flen;
	unsigned char *fbase = build(&flen, 1);
	CHECK(write_file(path, fbase, flen) == 0, "write");
	if (htr_read_path(path, 0, &s, &err) == 0) {
		CHECK(s.malformed == 0, "%s", s.first_malformed);
		uint64_t want_peak[] = {1, 24, 7};
		for (uint32_t i = 0; i < s.counters.count && i < 3; i++)
			CHECK(s.counters.peak_bytes[i] == want_peak[i], "peak of %u: %llu",
			      s.counters.ids[i], (unsigned long long)s.counters.peak_bytes[i]);
		CHECK(s.peak.gen == 2 && s.peak.bytes == 30 && s.peak.ns == 77 && s.peak.settled,
		      "peak header");
		CHECK(s.peak_stack_bytes == 32, "peak stack bytes %llu",
		      (unsigned long long)s.peak_stack_bytes);
		CHECK(s.live.inuse_bytes == 25 && s.live.timeline_next == 5, "live words");
		CHECK(s.timeline.count == 4 && s.timeline.index[0] == 1 && s.timeline.ns[3] == 1004 &&
		      s.timeline.next == 5, "timeline: %u points", s.timeline.count);
		check_invariants(&s, "features");
		htr_snapshot_free(&s);
	} else {
		CHECK(0, "features region: %s", err.msg);
	}

	/* the valid region reads back exactly */
	CHECK(write_file(path, base, len) == 0, "write");
	int rc = htr_read_path(path, 0, &s, &err);
	CHECK(rc == 0, "%s", err.msg);
	if (rc == 0) {
		CHECK(s.malformed == 0, "%s", s.first_malformed);
		CHECK(s.counters.count == 3, "count %u", s.counters.count);
		uint64_t want_ids[] = {1, 2, 3}, want_bytes[] = {5, 30, 7};
		for (uint32_t i = 0; i < s.counters.count && i < 3; i++) {
			CHECK(s.counters.ids[i] == want_ids[i], "id %u", s.counters.ids[i]);
			CHECK(s.counters.alloc_bytes[i] == want_bytes[i], "bytes %llu",
			      (unsigned long long)s.counters.alloc_bytes[i]);
		}
		CHECK(s.stacks.count == 3 && s.stacks.nframes == 6, "stacks %u", s.stacks.count);
		CHECK(s.module_count == 1 && strcmp(s.modules[0].path, "/bin/true") == 0, "module");
		CHECK(s.alive == 0, "alive");
		check_invariants(&s, "valid");
		htr_snapshot_free(&s);
	}

	/* control round trip */
	CHECK(htr_write_control(path, 1, 1, 1, 4096, &err) == 0, "%s", err.msg);
	if (htr_read_path(path, 0, &s, &err) == 0) {
		CHECK(s.live.control_paused == 1 && s.live.control_rate == 4096 && s.live.control_seq == 1,
		      "control");
		htr_snapshot_free(&s);
	}

	/* seeded corruption: single bit flips and hostile words anywhere in the file */
	static const uint64_t hostile[] = {0, 1, 4096, 8192, 0x7fffffff, 0xffffffff, 1ull << 32,
					   1ull << 63, ~0ull, ~0ull - 4095};
	const size_t len0 = len;
	unsigned char *buf = malloc(len > flen ? len : flen);
	char what[96];
	long returned = 0, refused = 0;
	for (long i = 0; i < rounds; i++) {
		/* every other pair of rounds on the region with features */
		int feat = (i / 2) % 2;
		const unsigned char *from = feat ? fbase : base;
		size_t blen = feat ? flen : len0;
		memcpy(buf, from, blen);
		size_t pos;
		if (i % 2 == 0) {
			pos = (size_t)(rnd() % (i % 4 == 0 ? sizeof(struct ht_header) : blen));
			buf[pos] ^= (unsigned char)(1u << (rnd() % 8));
			snprintf(what, sizeof what, "flip at %zu", pos);
		} else {
			pos = (size_t)(rnd() % ((i % 3 == 0 ? sizeof(struct ht_header) : blen) / 8)) * 8;
			uint64_t v = hostile[rnd() % (sizeof hostile / sizeof hostile[0])];
			memcpy(buf + pos, &v, rnd() % 2 ? 8 : 4);
			snprintf(what, sizeof what, "word at %zu = %llu", pos, (unsigned long long)v);
		}
		if (write_file(path, buf, blen) != 0)
			break;
		if (htr_read_path(path, 0, &s, &err) == 0) {
			returned++;
			check_invariants(&s, what);
			htr_snapshot_free(&s);
		} else {
			refused++;
			CHECK(err.kind != HTR_OK && err.msg[0] != '\0', "%s: error without message", what);
		}
	}
	/* every truncation at 512-byte steps is refused */
	for (size_t l = 0; l < len; l += 512) {
		if (write_file(path, base, l) != 0)
			break;
		CHECK(htr_read_path(path, 0, &s, &err) != 0, "truncated to %zu was read", l);
	}

	/* a file that shrinks under an open mapping: the live words read as zeros instead of
	 * raising SIGBUS, and the next snapshot says the file changed */
	CHECK(write_file(path, base, len) == 0, "write");
	struct htr_region r;
	if (htr_open(&r, path, &err) == 0) {
		CHECK(truncate(path, 4096) == 0, "truncate");
		struct htr_live live;
		htr_read_live(&r, &live); /* the control page now lies past the end */
		CHECK(live.state == 0 && live.control_seq == 0, "live words of a shrunk file");
		CHECK(htr_snapshot_take(&r, 0, &s, &err) != 0 && err.kind == HTR_E_CHANGED,
		      "snapshot of a shrunk file: kind %d %s", err.kind, err.msg);
		htr_close(&r);
	} else {
		CHECK(0, "open: %s", err.msg);
	}

	/* the truncating writer: reads run while a thread truncates the file to 8 KiB (and
	 * other lengths) and grows it back, as in issue 10. Nothing may kill us; every read
	 * either succeeds with the region's own totals or says what went wrong. */
	{
		CHECK(write_file(path, base, len) == 0, "write");
		struct resizer z = {path, base, len, 77, 0, 0};
		pthread_t th;
		pthread_create(&th, NULL, resize_loop, &z);
		long ok_reads = 0, changed = 0, caught = 0, other = 0;
		double t0 = now_ms();
		while (now_ms() - t0 < 1500) {
			if (htr_read_path(path, 0, &s, &err) == 0) {
				ok_reads++;
				check_invariants(&s, "under truncation");
				htr_snapshot_free(&s);
			} else if (err.kind == HTR_E_CHANGED) {
				changed++;
				caught += strstr(err.msg, "while it was being read") != NULL;
			} else {
				other++;
				CHECK(err.msg[0] != '\0', "error without message");
			}
		}
		z.stop = 1;
		pthread_join(th, NULL);
		CHECK(ok_reads + changed + other > 0 && z.changes > 0, "no reads or no changes");
		printf("truncating writer: %ld size changes; %ld reads returned, %ld said the file "
		       "changed (%ld of them a fault caught), %ld refused otherwise\n", z.changes,
		       ok_reads, changed, caught, other);
	}

	/* the sparse file: 20 million stack records and shared rows claimed, all holes but
	 * one page each. The read returns the small region's totals, faults no hole in (the
	 * file's allocated blocks stay the same) and allocates little. */
	{
		off_t apparent = 0;
		CHECK(write_sparse(path, base, &apparent) == 0, "write sparse");
		long long b0 = file_blocks(path);
		long r0 = rss_kb();
		double t0 = now_ms();
		rc = htr_read_path(path, 0, &s, &err);
		double took = now_ms() - t0;
		long r1 = rss_kb();
		long long b1 = file_blocks(path);
		CHECK(rc == 0, "sparse: %s", err.msg);
		if (rc == 0) {
			CHECK(s.counters.count == 3 && s.stacks.count == 3, "sparse: %u counted, %u stacks",
			      s.counters.count, s.stacks.count);
			CHECK(s.stacks.next_stack == 5, "sparse: next stack %u", s.stacks.next_stack);
			htr_snapshot_free(&s);
		}
		CHECK(b1 == b0, "sparse: the read faulted holes in: %lld -> %lld blocks", b0, b1);
		/* a read that touched every claimed entry would map 1.3 GB */
		CHECK(r1 - r0 < 32 * 1024, "sparse: resident grew by %ld KiB", r1 - r0);
		printf("sparse region: %lld MB apparent, %lld KiB data; read in %.1f ms, resident "
		       "+%ld KiB, blocks %lld -> %lld\n", (long long)apparent >> 20, b0 / 2, took,
		       r1 - r0, b0, b1);
	}

	/* the data cap: a file whose allocated blocks exceed it is refused */
	{
		CHECK(write_file(path, base, len) == 0, "write");
		int fd = open(path, O_WRONLY | O_CLOEXEC);
		size_t big = 9u << 20;
		unsigned char *fill = malloc(big);
		memset(fill, 1, big);
		CHECK(fd >= 0 && pwrite(fd, fill, big, (off_t)len) == (ssize_t)big, "fill");
		if (fd >= 0)
			close(fd);
		free(fill);
		CHECK(htr_read_path(path, 0, &s, &err) != 0 && err.kind == HTR_E_LIMIT &&
			      strstr(err.msg, "HEAPTAP_MAX_REGION_BYTES"),
		      "over the cap: kind %d %s", err.kind, err.msg);
	}

	/* the mutants again, each resized by a thread while it is read three times */
	long resized_reads = 0, resized_changed = 0, hangs = 0;
	double worst = 0;
	long changes = 0;
	unsigned char *mut = malloc(len > flen ? len : flen);
	for (long i = 0; i < resize_rounds; i++) {
		int feat = i % 2;
		const unsigned char *from = feat ? fbase : base;
		size_t blen = feat ? flen : len0;
		memcpy(mut, from, blen);
		if (i % 3 != 0) { /* one in three unmutated: the resizing alone */
			size_t pos = (size_t)(rnd() % (blen / 8)) * 8;
			uint64_t v = hostile[rnd() % (sizeof hostile / sizeof hostile[0])];
			memcpy(mut + pos, &v, rnd() % 2 ? 8 : 4);
		}
		if (write_file(path, mut, blen) != 0)
			break;
		struct resizer z = {path, mut, blen, rnd(), 0, 0};
		pthread_t th;
		pthread_create(&th, NULL, resize_loop, &z);
		for (int k = 0; k < 3; k++) {
			double t0 = now_ms();
			if (htr_read_path(path, 0, &s, &err) == 0) {
				resized_reads++;
				check_invariants(&s, "resized mutant");
				htr_snapshot_free(&s);
			} else if (err.kind == HTR_E_CHANGED) {
				resized_changed++;
			}
			double d = now_ms() - t0;
			if (d > worst)
				worst = d;
			if (d > 1000)
				hangs++;
		}
		z.stop = 1;
		pthread_join(th, NULL);
		changes += z.changes;
	}
	free(mut);
	printf("fuzz: %ld mutants (%ld read, %ld refused); %ld resized mutants, %ld size changes "
	       "during %ld reads (%ld returned, %ld said the file changed); crashes 0 (one would "
	       "have ended the run), hangs "
	       "(reads over 1 s) %ld, worst read %.1f ms, max RSS %ld KiB%s\n",
	       rounds, returned, refused, resize_rounds, changes, resize_rounds * 3, resized_reads,
	       resized_changed, hangs, worst, max_rss_kb(), ASAN_NOTE);
	free(buf);
	free(base);
	free(fbase);
	unlink(path);
	printf("corpus: %ld read, %ld refused\n", returned, refused);
	printf("%d passed, %d failed\n", passes, failures);
	return failures ? 1 : 0;
}
