#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>
#include "region.h"
#include "slab.h"

#define ALIGN_UP(x, a) (((x) + (uint64_t)(a) - 1) & ~((uint64_t)(a) - 1))
/* Growing sections are reserved a page at first, then doubling: a process that exits after
 * a handful of samples backs a few pages of each, a large one few fallocate calls. */
#define RESERVE_MIN 4096u

HT_HIDDEN uint64_t ht_pending_drops[HT_DROP_SLOTS];

static void set_section(struct ht_section *s, uint64_t *off, uint32_t cap, uint32_t entry)
{
	s->offset = *off;
	s->capacity = cap;
	s->entry_bytes = entry;
	s->bytes = ALIGN_UP((uint64_t)cap * entry, HT_SECTION_ALIGN);
	*off += s->bytes;
}

/* Reads a small file into buf (NUL-terminated); returns bytes read or -1. */
static ssize_t read_small(const char *path, char *buf, size_t n)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	size_t got = 0;
	while (got < n - 1) {
		ssize_t k = read(fd, buf + got, n - 1 - got);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			break;
		got += (size_t)k;
	}
	close(fd);
	buf[got] = 0;
	return (ssize_t)got;
}

/* Field 22 (starttime, clock ticks since boot) of /proc/self/stat; the comm field may hold
 * spaces and parentheses, so count from the last ')'. */
static uint64_t proc_start_ticks(void)
{
	char buf[1024];
	if (read_small("/proc/self/stat", buf, sizeof buf) <= 0)
		return 0;
	char *p = strrchr(buf, ')');
	if (!p)
		return 0;
	int field = 2;
	for (; *p && field < 22; p++)
		if (*p == ' ')
			field++;
	uint64_t v = 0;
	while (*p >= '0' && *p <= '9')
		v = v * 10 + (uint64_t)(*p++ - '0');
	return v;
}

static void fill_identity(struct ht_header *h, const struct ht_config *c)
{
	h->pid = getpid();
	h->ppid = getppid();
	h->start_ns = ht_now_ns();
	h->proc_start_ticks = proc_start_ticks();
	ssize_t n = readlink("/proc/self/exe", h->exe, sizeof h->exe - 1);
	h->exe[n > 0 ? n : 0] = 0;
	ssize_t m = read_small("/proc/self/cmdline", h->cmdline, sizeof h->cmdline);
	for (ssize_t i = 0; i < m - 1; i++)
		if (h->cmdline[i] == 0)
			h->cmdline[i] = ' ';
	if (c->service[0]) {
		memcpy(h->service, c->service, sizeof h->service - 1);
	} else {
		const char *b = strrchr(h->exe, '/');
		b = b ? b + 1 : h->exe;
		size_t len = strlen(b);
		if (len > sizeof h->service - 1)
			len = sizeof h->service - 1;
		memcpy(h->service, b, len);
		h->service[len] = 0;
	}
}

/* Writes decimal v into p; returns the end. (No snprintf: also used in a fork child.) */
static char *put_u64(char *p, uint64_t v)
{
	char t[24];
	int n = 0;
	do { t[n++] = (char)('0' + v % 10); v /= 10; } while (v);
	while (n)
		*p++ = t[--n];
	return p;
}

static char *put_str(char *p, const char *s)
{
	while (*s)
		*p++ = *s++;
	return p;
}

static int reserve(struct ht_region *r, uint64_t off, uint64_t len)
{
	if (!r->reserve_enabled || len == 0)
		return 0;
	int e;
	do {
		e = fallocate(r->fd, 0, (off_t)off, (off_t)len);
	} while (e < 0 && errno == EINTR);
	if (e == 0)
		return 0;
	if (errno == EOPNOTSUPP || errno == ENOSYS) {
		r->reserve_enabled = 0; /* a file system that cannot reserve cannot SIGBUS us */
		return 0;
	}
	return -1;
}

/* mkdir -p, each missing component 0700. */
static int make_dirs(const char *dir)
{
	char p[sizeof ((struct ht_config *)0)->dir];
	size_t n = strlen(dir);
	if (n >= sizeof p)
		return -1;
	memcpy(p, dir, n + 1);
	for (size_t i = 1; i <= n; i++) {
		if (p[i] != '/' && p[i] != 0)
			continue;
		char saved = p[i];
		p[i] = 0;
		if (mkdir(p, 0700) < 0 && errno != EEXIST)
			return -1;
		p[i] = saved;
	}
	return 0;
}

HT_HIDDEN int ht_region_check_dir(const struct ht_config *c, char *err, size_t errlen)
{
	if (make_dirs(c->dir) < 0) {
		snprintf(err, errlen, "cannot create HEAPTAP_DIR %s: %s", c->dir, ht_errstr(errno));
		return -1;
	}
	/* Not stat(): glibc < 2.33 has no stat symbol to bind to (libheaptap.so loads on 2.17). */
	int dfd = open(c->dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0) {
		snprintf(err, errlen, "HEAPTAP_DIR %s is not a directory", c->dir);
		return -1;
	}
	close(dfd);
	if (access(c->dir, W_OK | X_OK) < 0) {
		snprintf(err, errlen, "cannot write to HEAPTAP_DIR %s: %s", c->dir, ht_errstr(errno));
		return -1;
	}
	return 0;
}

/* Region files (ours and half-made ones) in dir, counted up to limit: one open and a few
 * getdents64 calls (no opendir: it allocates). */
static uint32_t count_regions(const char *dir, uint32_t limit)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	uint32_t n = 0;
	char buf[4096] __attribute__((aligned(8)));
	for (;;) {
		long got = syscall(SYS_getdents64, fd, buf, sizeof buf);
		if (got <= 0)
			break;
		for (long off = 0; off < got;) {
			/* struct linux_dirent64: ino (8), off (8), reclen (2), type (1), name */
			uint16_t reclen;
			memcpy(&reclen, buf + off + 16, 2);
			const char *name = buf + off + 19;
			size_t len = strnlen(name, (size_t)reclen);
			size_t sl = sizeof HT_REGION_SUFFIX - 1;
			if (len > sl && !memcmp(name + len - sl, HT_REGION_SUFFIX, sl))
				n++;
			off += reclen ? reclen : got;
		}
		if (n >= limit)
			break;
	}
	close(fd);
	return n;
}

/* A process refused by the cap says so in $dir/.refused: one byte appended per process
 * image, so its size counts them. Returns that count (0 if the file cannot be written). */
static uint64_t note_refused(const char *dir)
{
	char path[sizeof ((struct ht_config *)0)->dir + 16];
	char *p = put_str(path, dir);
	p = put_str(p, "/.refused");
	*p = 0;
	int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return 0;
	uint64_t n = 0;
	if (write(fd, "x", 1) == 1) {
		off_t end = lseek(fd, 0, SEEK_CUR);
		n = end > 0 ? (uint64_t)end : 0;
	}
	close(fd);
	return n;
}

HT_HIDDEN int ht_region_create(struct ht_region *r, const struct ht_config *c,
			       uint32_t flags, char *err, size_t errlen)
{
	memset(r, 0, sizeof *r);
	r->fd = -1;
	r->reserve_enabled = 1;

	/* layout */
	struct ht_header tmp;
	memset(&tmp, 0, sizeof tmp);
	uint64_t off = HT_HEADER_BYTES;
	uint32_t index_cap = 1;
	while (index_cap < 2ull * c->max_stacks)
		index_cap <<= 1;
	/* Room for every stack at full depth (up to 64 frames each): the pool must not run out
	 * before the stack table does. Deep interpreter stacks average 40 frames (python3),
	 * so a pool sized for an average of 24 filled at 60% of max_stacks. The file is
	 * sparse and space is reserved as frames are written, so capacity costs nothing until
	 * used; 2^22 stacks x 64 frames keeps the file under the reader's 4 GiB limit. */
	uint32_t frames_cap = c->max_stacks * (c->max_depth < 64u ? c->max_depth : 64u);
	uint32_t slab_bytes = (uint32_t)ALIGN_UP(ht_slab_bytes(c->slab_entries), HT_SECTION_ALIGN);
	set_section(&tmp.modules, &off, c->max_modules, sizeof(struct ht_module));
	set_section(&tmp.paths, &off, c->max_modules * 256u, 1);
	/* The stack index is written at hashed, scattered places, so backing it in the file
	 * meant reserving all of it up front (512 KiB by default) for every process. Only the
	 * writer uses it, so it lives in private memory (ht_region_create maps it, touched
	 * page by page as stacks arrive) and the section is a single empty page, kept so the
	 * layout stays the one readers know. */
	set_section(&tmp.stack_index, &off, 1, sizeof(uint32_t));
	set_section(&tmp.stacks, &off, c->max_stacks, sizeof(struct ht_stack));
	set_section(&tmp.frames, &off, frames_cap, sizeof(uint64_t));
	set_section(&tmp.shared, &off, c->max_stacks, sizeof(struct ht_counters));
	set_section(&tmp.slabs, &off, c->max_threads, slab_bytes);
	set_section(&tmp.timeline, &off, HT_TIMELINE_POINTS, sizeof(struct ht_timeline_point));
	set_section(&tmp.shared_peak, &off, c->max_stacks, sizeof(struct ht_peak));
	uint64_t file_bytes = off;

	if (ht_region_check_dir(c, err, errlen) < 0)
		return -1;
	/* The directory must not grow without bound (a shell loop of short processes at rate
	 * 1 made thousands of regions): past the cap this image is not profiled. */
	if (c->max_regions && count_regions(c->dir, c->max_regions) >= c->max_regions) {
		/* Only the first refused image says so on stderr (a shell loop would print a
		 * line per process); .refused counts them all. */
		if (note_refused(c->dir) <= 1)
			snprintf(err, errlen, "HEAPTAP_DIR %s already holds HEAPTAP_MAX_REGIONS=%u "
				 "regions (later processes refused are counted in %s/.refused)",
				 c->dir, c->max_regions, c->dir);
		else
			err[0] = 0;
		return -1;
	}

	fill_identity(&tmp, c);
	char tmpname[sizeof r->path];
	char *p = put_str(r->path, c->dir);
	p = put_str(p, "/");
	p = put_u64(p, (uint64_t)tmp.pid);
	p = put_str(p, "-");
	p = put_u64(p, tmp.start_ns);
	p = put_str(p, HT_REGION_SUFFIX);
	*p = 0;
	p = put_str(tmpname, c->dir);
	p = put_str(p, "/.");
	p = put_u64(p, (uint64_t)tmp.pid);
	p = put_str(p, "-");
	p = put_u64(p, tmp.start_ns);
	p = put_str(p, ".tmp");
	*p = 0;

	int fd = open(tmpname, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0) {
		int e = errno;
		snprintf(err, errlen, "cannot create %s: %s", tmpname, ht_errstr(e));
		return -1;
	}
	r->fd = fd;
	/* Liveness lock first: from the moment the file has its final name, a reader that
	 * can take LOCK_EX knows this image is gone. */
	flock(fd, LOCK_SH);
	void *index = MAP_FAILED;
	const char *what = "set the mode of";
	if (fchmod(fd, c->file_mode) < 0)
		goto fail;
	what = "size";
	if (ftruncate(fd, (off_t)file_bytes) < 0)
		goto fail;
	/* The header and control pages are written at once; every other section is backed
	 * as it grows (ht_region_reserve_*). */
	what = "reserve space for";
	if (reserve(r, 0, HT_HEADER_BYTES) < 0)
		goto fail;
	what = "map";
	index = mmap(NULL, (size_t)index_cap * sizeof(uint32_t), PROT_READ | PROT_WRITE,
		     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (index == MAP_FAILED)
		goto fail;
	void *m = mmap(NULL, file_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (m == MAP_FAILED)
		goto fail;
	r->base = m;
	r->bytes = file_bytes;
	r->index = index;
	r->index_mask = index_cap - 1;

	struct ht_header *h = (struct ht_header *)r->base;
	memcpy(h, &tmp, sizeof tmp);
	h->magic = HT_MAGIC;
	h->version = HT_LAYOUT_VERSION;
	h->header_bytes = HT_HEADER_BYTES;
	h->file_bytes = file_bytes;
	h->flags = flags | (c->rate == 1 ? HT_FLAG_EXACT : 0);
#if defined(__x86_64__)
	h->arch = 62;
#elif defined(__aarch64__)
	h->arch = 183;
#endif
	h->slab_entries = c->slab_entries;
	h->max_depth = c->max_depth;
	h->sample_rate = c->rate;
	h->rate_now = c->rate;
	h->seed = c->seed;
	h->unwinder = c->unwinder;
	h->stacks_used = HT_STACK_FIRST;
	h->features = HT_FEATURE_PEAK | HT_FEATURE_TIMELINE;

	r->ctl = (struct ht_control *)(r->base + HT_CONTROL_OFFSET);
	r->modules = (struct ht_module *)(r->base + h->modules.offset);
	r->paths = (char *)(r->base + h->paths.offset);
	r->stacks = (struct ht_stack *)(r->base + h->stacks.offset);
	r->frames = (uint64_t *)(r->base + h->frames.offset);
	r->shared = (struct ht_counters *)(r->base + h->shared.offset);
	r->shared_peak = (struct ht_peak *)(r->base + h->shared_peak.offset);
	r->timeline = (struct ht_timeline_point *)(r->base + h->timeline.offset);
	r->slabs = r->base + h->slabs.offset;
	r->slab_bytes = slab_bytes;
	r->hdr = h;

	what = "reserve space for";
	if (ht_region_reserve_ids(r, HT_STACK_FIRST + 1) < 0)
		goto fail;
	/* The synthetic overflow stack: no frames, READY from the start. */
	r->stacks[HT_STACK_OVERFLOW].hash = 1;
	r->stacks[HT_STACK_OVERFLOW].flags = HT_STACK_READY | HT_STACK_SYNTHETIC;

	what = "publish";
	if (rename(tmpname, r->path) < 0)
		goto fail;
	/* Drops counted while there was no region belong to this image. */
	for (unsigned i = 0; i < HT_DROP_SLOTS; i++) {
		uint64_t d = __atomic_exchange_n(&ht_pending_drops[i], 0, __ATOMIC_RELAXED);
		if (d)
			add_relaxed(&h->drops[i], d);
	}
	return 0;
fail:;
	/* Undo everything before saying why: nothing half-made stays behind, and formatting
	 * the message finds no half-made region if it allocates and comes back to us. */
	int e = errno;
	unlink(tmpname);
	if (r->base)
		munmap(r->base, r->bytes);
	if (index != MAP_FAILED)
		munmap(index, (size_t)index_cap * sizeof(uint32_t));
	close(fd);
	memset(r, 0, sizeof *r);
	r->fd = -1;
	snprintf(err, errlen, "cannot %s %s: %s", what, tmpname, ht_errstr(e));
	return -1;
}

HT_HIDDEN void ht_region_publish(struct ht_region *r)
{
	/* Readers that see RUNNING see every field written above (release/acquire). */
	st_release(&r->hdr->state, HT_STATE_RUNNING);
}

HT_HIDDEN void ht_region_mark_exited(struct ht_region *r)
{
	if (!r->hdr)
		return;
	st_relaxed(&r->hdr->exit_ns, ht_now_ns());
	/* exit_ns is visible to a reader that sees EXITED. */
	st_release(&r->hdr->state, HT_STATE_EXITED);
}

HT_HIDDEN void ht_region_detach(struct ht_region *r)
{
	if (r->base)
		munmap(r->base, r->bytes);
	if (r->index)
		munmap(r->index, ((size_t)r->index_mask + 1) * sizeof(uint32_t));
	if (r->fd >= 0)
		close(r->fd);
	memset(r, 0, sizeof *r);
	r->fd = -1;
}

/* Grows *mark (entries reserved) to cover upto entries of the section at off with entries
 * of size each. */
static int reserve_grow(struct ht_region *r, uint64_t *mark, uint64_t upto, uint64_t off,
			uint64_t size, uint64_t cap)
{
	if (HT_LIKELY(upto <= ld_relaxed(mark)))
		return 0;
	if (upto > cap)
		upto = cap;
	/* A spin, not a skip: the holder runs only fallocate and our own code, never waits on
	 * anything the program holds, so this wait is short and cannot close a cycle. */
	ht_spin_lock(&r->reserve_lock);
	uint64_t have = *mark;
	int rc = 0;
	if (upto > have) {
		uint64_t from = ALIGN_UP(off + have * size, HT_SECTION_ALIGN) - HT_SECTION_ALIGN;
		if (from < off)
			from = off;
		uint64_t want = upto * size;
		uint64_t grow = have * size < RESERVE_MIN ? RESERVE_MIN : have * size;
		if (want < have * size + grow)
			want = have * size + grow;
		if (want > cap * size)
			want = cap * size;
		uint64_t to = ALIGN_UP(off + want, HT_SECTION_ALIGN);
		rc = reserve(r, from, to - from);
		if (rc == 0) {
			uint64_t n = (to - off) / size;
			st_relaxed(mark, n > cap ? cap : n);
		}
	}
	ht_spin_unlock(&r->reserve_lock);
	return rc;
}

HT_HIDDEN int ht_region_reserve_ids(struct ht_region *r, uint64_t upto)
{
	/* A stack id indexes two sections: its record and its shared counters. */
	const struct ht_header *h = r->hdr;
	int rc = reserve_grow(r, &r->reserved_stacks, upto, h->stacks.offset,
			      sizeof(struct ht_stack), h->stacks.capacity);
	if (rc)
		return rc;
	rc = reserve_grow(r, &r->reserved_shared, upto, h->shared.offset,
			  sizeof(struct ht_counters), h->shared.capacity);
	if (rc)
		return rc;
	return reserve_grow(r, &r->reserved_shared_peak, upto, h->shared_peak.offset,
			    sizeof(struct ht_peak), h->shared_peak.capacity);
}

HT_HIDDEN int ht_region_reserve_timeline(struct ht_region *r, uint64_t upto)
{
	const struct ht_header *h = r->hdr;
	return reserve_grow(r, &r->reserved_timeline, upto, h->timeline.offset,
			    sizeof(struct ht_timeline_point), h->timeline.capacity);
}

HT_HIDDEN int ht_region_reserve_modules(struct ht_region *r, uint64_t upto)
{
	const struct ht_header *h = r->hdr;
	return reserve_grow(r, &r->reserved_modules, upto, h->modules.offset,
			    sizeof(struct ht_module), h->modules.capacity);
}

HT_HIDDEN int ht_region_reserve_paths(struct ht_region *r, uint64_t upto)
{
	const struct ht_header *h = r->hdr;
	return reserve_grow(r, &r->reserved_paths, upto, h->paths.offset, 1, h->paths.capacity);
}

HT_HIDDEN void ht_region_forget_pending(void)
{
	for (unsigned i = 0; i < HT_DROP_SLOTS; i++)
		st_relaxed(&ht_pending_drops[i], 0);
}

HT_HIDDEN int ht_region_reserve_frames(struct ht_region *r, uint64_t upto)
{
	const struct ht_header *h = r->hdr;
	return reserve_grow(r, &r->reserved_frames, upto, h->frames.offset, sizeof(uint64_t),
			    h->frames.capacity);
}

HT_HIDDEN int ht_region_reserve_slabs(struct ht_region *r, uint64_t upto)
{
	const struct ht_header *h = r->hdr;
	return reserve_grow(r, &r->reserved_slabs, upto, h->slabs.offset, r->slab_bytes,
			    h->slabs.capacity);
}
