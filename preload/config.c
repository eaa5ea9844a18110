/* Configuration from HEAPTAP_* environment variables, and logging without malloc.
 *
 * getenv() only reads environ (no allocation), and vsnprintf with %s/%d/%llu formats does
 * not allocate in glibc, so both are safe before the real allocator is resolved. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "ht.h"

HT_HIDDEN void ht_log(const char *fmt, ...)
{
	char buf[512];
	int n = snprintf(buf, sizeof buf, "heaptap: ");
	va_list ap;
	va_start(ap, fmt);
	int m = vsnprintf(buf + n, sizeof buf - (size_t)n - 1, fmt, ap);
	va_end(ap);
	if (m < 0)
		return;
	size_t len = (size_t)n + ((size_t)m < sizeof buf - (size_t)n - 1 ? (size_t)m : sizeof buf - (size_t)n - 2);
	buf[len++] = '\n';
	int saved = errno;
	ssize_t w = write(STDERR_FILENO, buf, len);
	(void)w;
	errno = saved;
}

/* strerror() looks up translated messages once a program has set a locale, and that may
 * allocate and take gettext's lock: not from inside an allocation. The errors heaptap can
 * meet making files, by name. */
HT_HIDDEN const char *ht_errstr(int e)
{
	switch (e) {
	case ENOSPC: return "no space left on device (ENOSPC)";
	case EDQUOT: return "disk quota exceeded (EDQUOT)";
	case EACCES: return "permission denied (EACCES)";
	case EPERM: return "operation not permitted (EPERM)";
	case EROFS: return "read-only file system (EROFS)";
	case ENOENT: return "no such file or directory (ENOENT)";
	case ENOTDIR: return "not a directory (ENOTDIR)";
	case EEXIST: return "file exists (EEXIST)";
	case EMFILE: return "too many open files (EMFILE)";
	case ENFILE: return "too many open files in system (ENFILE)";
	case ENOMEM: return "out of memory (ENOMEM)";
	case ENAMETOOLONG: return "file name too long (ENAMETOOLONG)";
	case ELOOP: return "too many symbolic links (ELOOP)";
	case EINVAL: return "invalid argument (EINVAL)";
	case EIO: return "input/output error (EIO)";
	case EFBIG: return "file too large (EFBIG)";
	default: return "error";
	}
}

HT_HIDDEN uint64_t ht_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

HT_HIDDEN void ht_config_defaults(struct ht_config *c)
{
	memset(c, 0, sizeof *c);
	c->rate = 524288;
	c->max_depth = 64;
	c->unwinder = HT_UNWIND_DWARF;
	c->max_stacks = 65536;
	c->max_threads = 256;
	c->slab_entries = 1024;
	c->max_modules = 1024;
	c->max_regions = 1000;
	c->file_mode = 0600;
	c->follow_children = 1;
	c->enabled = 1;
	strcpy(c->dir, "/dev/shm/heaptap");
}

/* Parses a whole unsigned decimal (or 0x hex, or octal with base 8) number with an
 * optional k/m/g binary suffix when suffixes is set. */
static int parse_u64(const char *s, int base, int suffixes, uint64_t *out)
{
	if (!s || !*s || *s == '-' || *s == '+' || *s == ' ')
		return -1;
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, base);
	if (errno || end == s)
		return -1;
	if (suffixes && *end) {
		unsigned shift = 0;
		switch (*end) {
		case 'k': case 'K': shift = 10; break;
		case 'm': case 'M': shift = 20; break;
		case 'g': case 'G': shift = 30; break;
		default: return -1;
		}
		end++;
		if (*end == 'i' || *end == 'I') end++;
		if (*end == 'b' || *end == 'B') end++;
		if (v > (~0ull >> shift))
			return -1;
		v <<= shift;
	}
	if (*end)
		return -1;
	*out = v;
	return 0;
}

#define BAD(...) do { snprintf(err, errlen, __VA_ARGS__); return -1; } while (0)

static int env_u64(const char *name, int base, int suffixes, uint64_t lo, uint64_t hi,
		   uint64_t *out, char *err, size_t errlen)
{
	const char *s = getenv(name);
	if (!s)
		return 0;
	uint64_t v;
	if (parse_u64(s, base, suffixes, &v) || v < lo || v > hi)
		BAD("%s='%.64s' is not %s in [%llu, %llu]", name, s,
		    base == 8 ? "an octal mode" : "a whole number", (unsigned long long)lo,
		    (unsigned long long)hi);
	*out = v;
	return 0;
}

static int env_bool(const char *name, int *out, char *err, size_t errlen)
{
	const char *s = getenv(name);
	if (!s)
		return 0;
	if (!strcmp(s, "1") || !strcasecmp(s, "true") || !strcasecmp(s, "yes") || !strcasecmp(s, "on"))
		*out = 1;
	else if (!strcmp(s, "0") || !strcasecmp(s, "false") || !strcasecmp(s, "no") || !strcasecmp(s, "off"))
		*out = 0;
	else
		BAD("%s='%.64s' is not 0 or 1", name, s);
	return 0;
}

static uint32_t pow2_at_least(uint64_t v)
{
	uint32_t p = 1;
	while (p < v && p < (1u << 30))
		p <<= 1;
	return p;
}

HT_HIDDEN int ht_config_from_env(struct ht_config *c, char *err, size_t errlen)
{
	uint64_t v;
	if (env_bool("HEAPTAP_ENABLED", &c->enabled, err, errlen))
		return -1;
	v = c->rate;
	if (env_u64("HEAPTAP_SAMPLE_RATE", 10, 1, 1, 1ull << 40, &v, err, errlen))
		return -1;
	c->rate = v;
	v = c->seed;
	if (env_u64("HEAPTAP_SEED", 0, 0, 0, ~0ull, &v, err, errlen))
		return -1;
	c->seed = v;
	v = c->max_depth;
	if (env_u64("HEAPTAP_MAX_DEPTH", 10, 0, 1, HT_MAX_DEPTH_LIMIT, &v, err, errlen))
		return -1;
	c->max_depth = (uint32_t)v;
	v = c->max_stacks;
	if (env_u64("HEAPTAP_MAX_STACKS", 10, 1, 16, 1u << 22, &v, err, errlen))
		return -1;
	c->max_stacks = (uint32_t)v;
	v = c->max_threads;
	if (env_u64("HEAPTAP_MAX_THREADS", 10, 0, 1, 65536, &v, err, errlen))
		return -1;
	c->max_threads = (uint32_t)v;
	v = c->slab_entries;
	if (env_u64("HEAPTAP_SLAB_ENTRIES", 10, 0, 16, 1u << 20, &v, err, errlen))
		return -1;
	c->slab_entries = pow2_at_least(v);
	/* A mode that lets group or others write would let them rewrite what the agent reads
	 * and the control area: ignored (the default kept, one line said), never fatal. */
	v = c->file_mode;
	c->warning[0] = 0;
	const char *fm = getenv("HEAPTAP_FILE_MODE");
	uint64_t fv;
	if (fm && !parse_u64(fm, 8, 0, &fv) && fv <= 07777 && (fv & 022)) {
		snprintf(c->warning, sizeof c->warning,
			 "HEAPTAP_FILE_MODE=%.16s lets group or others write the region: ignored, "
			 "region files are %04o", fm, (unsigned)c->file_mode);
	} else {
		if (env_u64("HEAPTAP_FILE_MODE", 8, 0, 0400, 0644, &v, err, errlen))
			return -1;
		if (!(v & 0400))
			BAD("HEAPTAP_FILE_MODE=%llo must let the owner read", (unsigned long long)v);
	}
	c->file_mode = (uint32_t)v;
	if (env_bool("HEAPTAP_FOLLOW_CHILDREN", &c->follow_children, err, errlen))
		return -1;
	v = c->max_regions;
	if (env_u64("HEAPTAP_MAX_REGIONS", 10, 0, 0, 1u << 20, &v, err, errlen))
		return -1;
	c->max_regions = (uint32_t)v;

	const char *u = getenv("HEAPTAP_UNWINDER");
	if (u) {
		if (!strcmp(u, "dwarf"))
			c->unwinder = HT_UNWIND_DWARF;
		else if (!strcmp(u, "fp"))
			c->unwinder = HT_UNWIND_FP;
		else
			BAD("HEAPTAP_UNWINDER='%.32s' is not 'dwarf' or 'fp'", u);
	}
	const char *d = getenv("HEAPTAP_DIR");
	if (d) {
		if (!*d || d[0] != '/' || strlen(d) >= sizeof c->dir - 64)
			BAD("HEAPTAP_DIR='%.64s' must be an absolute path shorter than %zu bytes", d,
			    sizeof c->dir - 64);
		strcpy(c->dir, d);
	}
	const char *s = getenv("HEAPTAP_SERVICE_NAME");
	if (!s || !*s)
		s = getenv("OTEL_SERVICE_NAME");
	if (s && *s) {
		strncpy(c->service, s, sizeof c->service - 1);
		c->service[sizeof c->service - 1] = 0;
	}
	return 0;
}
