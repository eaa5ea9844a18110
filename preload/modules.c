#include <elf.h>
#include <link.h>
#include <string.h>
#include <sys/auxv.h>
#include <unistd.h>
#include "modules.h"
#include "unwind.h"

#define PAGE_DOWN(x) ((x) & ~(uint64_t)4095)
#define PAGE_UP(x)   (((x) + 4095) & ~(uint64_t)4095)

static ht_spin_t scan_lock;
static unsigned long long seen_adds = ~0ull, seen_subs = ~0ull;
static uint64_t self_lo, self_hi;

HT_HIDDEN ht_spin_t *ht_modules_lock(void) { return &scan_lock; }

static uint32_t loader_users;   /* heaptap threads inside dl_iterate_phdr */
static uint32_t loader_closed;  /* a fork is under way */

HT_HIDDEN int ht_loader_enter(void)
{
	/* Dekker pair with ht_loader_fork_prepare: both sides store, then load (seq_cst). */
	__atomic_fetch_add(&loader_users, 1, __ATOMIC_SEQ_CST);
	if (__atomic_load_n(&loader_closed, __ATOMIC_SEQ_CST)) {
		__atomic_fetch_sub(&loader_users, 1, __ATOMIC_RELEASE);
		return 0;
	}
	return 1;
}

HT_HIDDEN void ht_loader_exit(void)
{
	__atomic_fetch_sub(&loader_users, 1, __ATOMIC_RELEASE);
}

HT_HIDDEN void ht_loader_fork_prepare(void)
{
	__atomic_store_n(&loader_closed, 1, __ATOMIC_SEQ_CST);
	while (__atomic_load_n(&loader_users, __ATOMIC_SEQ_CST))
		__builtin_ia32_pause();
}

HT_HIDDEN void ht_loader_fork_done(void)
{
	st_relaxed(&loader_users, 0);   /* in the child nobody else exists; in the parent 0 */
	st_release(&loader_closed, 0);
}

struct scan_ctx {
	struct ht_region *r;
	uint64_t scan_no;             /* marks entries seen in this scan (module.scan_mark) */
	unsigned long long adds, subs;
};

static uint32_t build_id_of(struct dl_phdr_info *info, uint8_t out[32])
{
	for (int i = 0; i < info->dlpi_phnum; i++) {
		const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
		if (ph->p_type != PT_NOTE)
			continue;
		const uint8_t *p = (const uint8_t *)(info->dlpi_addr + ph->p_vaddr);
		const uint8_t *end = p + ph->p_memsz;
		while (p + sizeof(ElfW(Nhdr)) <= end) {
			const ElfW(Nhdr) *n = (const ElfW(Nhdr) *)p;
			uint64_t name_sz = (n->n_namesz + 3) & ~3u, desc_sz = (n->n_descsz + 3) & ~3u;
			const uint8_t *name = p + sizeof *n, *desc = name + name_sz;
			if (desc + desc_sz > end)
				break;
			if (n->n_type == NT_GNU_BUILD_ID && n->n_namesz == 4 && !memcmp(name, "GNU", 4)) {
				uint32_t len = n->n_descsz > 32 ? 32 : n->n_descsz;
				memcpy(out, desc, len);
				return len;
			}
			p = desc + desc_sz;
		}
	}
	return 0;
}

/* Appends a path to the pool; returns its offset or UINT32_MAX when full. */
static uint32_t add_path(struct ht_region *r, const char *s)
{
	struct ht_header *h = r->hdr;
	size_t len = strlen(s);
	uint64_t off = h->paths_used;
	if (off + len + 1 > h->paths.bytes)
		return UINT32_MAX;
	if (ht_region_reserve_paths(r, off + len + 1) != 0)
		return UINT32_MAX;
	memcpy(r->paths + off, s, len + 1);
	st_relaxed(&h->paths_used, off + len + 1);
	return (uint32_t)off;
}

static int scan_one(struct dl_phdr_info *info, size_t size, void *data)
{
	struct scan_ctx *ctx = data;
	struct ht_region *r = ctx->r;
	struct ht_header *h = r->hdr;
	(void)size;
	ctx->adds = info->dlpi_adds;
	ctx->subs = info->dlpi_subs;
	const char *name = info->dlpi_name;
	uint32_t flags = 0;
#ifndef __GLIBC__
	/* musl names the main program by the path it was run by, and the vDSO "": tell the
	 * main program by its program headers, which the kernel put at AT_PHDR. */
	if ((uintptr_t)info->dlpi_phdr == getauxval(AT_PHDR))
		name = "";
	else if (!name || !*name)
		name = "linux-vdso.so.1";
#endif
	if (!name || !*name) {
		name = h->exe;       /* the main program */
		flags |= HT_MODULE_MAIN;
	} else if (!strncmp(name, "linux-vdso", 10) || !strncmp(name, "linux-gate", 10)) {
		flags |= HT_MODULE_VDSO;
	}
	uint8_t bid[32];
	uint32_t bid_len = build_id_of(info, bid);

	for (int i = 0; i < info->dlpi_phnum; i++) {
		const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
		if (ph->p_type != PT_LOAD || !(ph->p_flags & PF_X) || !ph->p_memsz)
			continue;
		uint64_t start = PAGE_DOWN(info->dlpi_addr + ph->p_vaddr);
		uint64_t limit = PAGE_UP(info->dlpi_addr + ph->p_vaddr + ph->p_memsz);
		uint32_t mflags = flags;
		if (self_lo >= start && self_lo < limit)
			mflags |= HT_MODULE_SELF;

		/* Known already? (same mapping of the same object) */
		uint32_t used = h->modules_used;
		int found = 0;
		for (uint32_t j = 0; j < used; j++) {
			struct ht_module *m = &r->modules[j];
			if (m->state == HT_MODULE_LOADED && m->start == start && m->limit == limit &&
			    m->load_bias == info->dlpi_addr && m->build_id_len == bid_len &&
			    !memcmp(m->build_id, bid, bid_len)) {
				m->scan_mark = (uint32_t)ctx->scan_no;
				found = 1;
				break;
			}
		}
		if (found)
			continue;
		if (used >= h->modules.capacity) {
			ht_drop(r, HT_DROP_MODULES_FULL);
			continue;
		}
		if (ht_region_reserve_modules(r, (uint64_t)used + 1) != 0) {
			ht_drop(r, HT_DROP_RESERVE_FAILED);
			continue;
		}
		uint32_t off = add_path(r, name);
		if (off == UINT32_MAX) {
			ht_drop(r, HT_DROP_MODULES_FULL);
			continue;
		}
		struct ht_module *m = &r->modules[used];
		m->flags = mflags;
		m->path_off = off;
		m->path_len = (uint32_t)strlen(name);
		m->load_bias = info->dlpi_addr;
		m->start = start;
		m->limit = limit;
		m->file_offset = PAGE_DOWN(ph->p_offset);
		m->load_ns = ht_now_ns();
		m->unload_ns = 0;
		m->build_id_len = bid_len;
		memcpy(m->build_id, bid, bid_len);
		m->scan_mark = (uint32_t)ctx->scan_no;
		/* release: a reader that sees LOADED sees the fields above; modules_used only
		 * tells it how far to look. */
		st_release(&m->state, HT_MODULE_LOADED);
		st_release(&h->modules_used, used + 1);
	}
	return 0;
}

static uint64_t scans;

HT_HIDDEN void ht_modules_scan(struct ht_region *r)
{
	if (!r->hdr || !ht_spin_trylock(&scan_lock))
		return;
	if (!ht_loader_enter()) {
		ht_spin_unlock(&scan_lock);
		return;
	}
	struct scan_ctx ctx = { r, ++scans, 0, 0 };
	if (ctx.scan_no == 0 || ctx.scan_no == 0xFFFFFFFFu)
		ctx.scan_no = ++scans;
	dl_iterate_phdr(scan_one, &ctx);
	ht_loader_exit();
	/* Entries not seen in this walk belong to objects that were unloaded. */
	uint32_t used = r->hdr->modules_used;
	uint64_t now = ht_now_ns();
	int unloaded = 0;
	for (uint32_t j = 0; j < used; j++) {
		struct ht_module *m = &r->modules[j];
		if (m->state == HT_MODULE_LOADED && m->scan_mark != (uint32_t)ctx.scan_no) {
			st_relaxed(&m->unload_ns, now);
			st_release(&m->state, HT_MODULE_UNLOADED);
			unloaded = 1;
		}
	}
	/* Another object may be mapped where this one was: forget its cached unwind rules. */
	if (unloaded)
		ht_unwind_invalidate();
	seen_adds = ctx.adds;
	seen_subs = ctx.subs;
	ht_spin_unlock(&scan_lock);
}

static int first_counts(struct dl_phdr_info *info, size_t size, void *data)
{
	(void)size;
	unsigned long long *c = data;
	c[0] = info->dlpi_adds;
	c[1] = info->dlpi_subs;
	return 1; /* the counters are the same in every entry: stop */
}

HT_HIDDEN void ht_modules_refresh(struct ht_region *r)
{
	unsigned long long c[2] = { 0, 0 };
	if (!ht_loader_enter())
		return;
	dl_iterate_phdr(first_counts, c);
	ht_loader_exit();
	if (c[0] != ld_relaxed(&seen_adds) || c[1] != ld_relaxed(&seen_subs))
		ht_modules_scan(r);
}

HT_HIDDEN int ht_modules_cover(struct ht_region *r, uint64_t pc)
{
	uint32_t used = ld_acquire(&r->hdr->modules_used);
	for (uint32_t j = 0; j < used; j++) {
		const struct ht_module *m = &r->modules[j];
		if (pc >= m->start && pc < m->limit && ld_relaxed(&m->state) == HT_MODULE_LOADED)
			return 1;
	}
	return 0;
}

static int find_self(struct dl_phdr_info *info, size_t size, void *data)
{
	(void)size;
	uint64_t me = (uint64_t)(uintptr_t)data;
	for (int i = 0; i < info->dlpi_phnum; i++) {
		const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
		if (ph->p_type != PT_LOAD || !(ph->p_flags & PF_X))
			continue;
		uint64_t lo = info->dlpi_addr + ph->p_vaddr, hi = lo + ph->p_memsz;
		if (me >= lo && me < hi) {
			self_lo = lo;
			self_hi = hi;
			return 1;
		}
	}
	return 0;
}

HT_HIDDEN void ht_self_range(uint64_t *lo, uint64_t *hi)
{
	if (!self_hi && ht_loader_enter()) {
		dl_iterate_phdr(find_self, (void *)(uintptr_t)&ht_self_range);
		ht_loader_exit();
	}
	*lo = self_lo;
	*hi = self_hi;
}
