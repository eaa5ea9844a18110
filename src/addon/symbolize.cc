// SPDX-License-Identifier: Apache-2.0
//
// ELF/DWARF symbolization with elfutils (libdwfl, libdw, libelf), for the sidecar's profiles.
// Design and limits: docs/symbolization.md. The typed wrapper with the policy (which paths to
// try, address caching) is src/symbolize.ts; this file opens module files, keeps them open in
// a bounded LRU keyed by build id, and turns ELF virtual addresses into frames.
//
// One Dwfl per module file, reported offline (dwfl_report_offline), so addresses are the
// file's own virtual addresses (plus the bias libdwfl chose, which we read back and add).
//
// Files are input from other containers: treat them as hostile. Every file we hand to libelf
// is opened O_NONBLOCK (a FIFO cannot hang us), checked to be a regular file of bounded size
// whose ELF identification says executable or shared object (libdwfl would otherwise accept
// ar archives and transparently decompress gzip/xz/zstd files), and then reopened by
// libdwfl through /proc/self/fd/N, so the checked file is the parsed one. libdw/libelf
// errors become an error string in the result; nothing throws across the C calls.
//
// debuginfod is never used: the find_elf and find_debuginfo callbacks are ours.
// dwfl_standard_find_debuginfo and dwfl_build_id_find_elf fall back to the debuginfod client
// (which honours DEBUGINFOD_URLS) when nothing is found locally; our find_debuginfo
// searches <debugdir>/.build-id/, .gnu_debuglink and dwz alt files itself, every candidate
// through OpenElf. The process environment is left alone (unsetenv in a threaded process
// races with getenv).
//
// Threading: a ModuleFile is used by one thread at a time (its mutex); libdw keeps no global
// state besides a thread-local error code. The LRU is guarded by Core::mu. Results are built
// on the worker thread and turned into JS values on the main thread.

#include "symbolize.h"
#include "reader.h"

#include <cxxabi.h>
// rust_demangle: Debian libiberty-dev (libiberty.a, PIC). glibc declares basename already.
#define HAVE_DECL_BASENAME 1
#include <libiberty/demangle.h>
#include <dwarf.h>
#include <elfutils/libdw.h>
#include <elfutils/libdwelf.h>
#include <elfutils/libdwfl.h>
#include <fcntl.h>
#include <gelf.h>
#include <libelf.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <list>
#include <memory>
#include <mutex>
#include <new>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace {

// Limits that bound the work and memory one hostile file can cost.
constexpr uint64_t kMaxFileBytes = 4ull << 30;   // main and debug files
constexpr size_t kMaxInlineDepth = 128;          // scope nesting followed per address
constexpr size_t kMaxNameBytes = 64 << 10;       // longer mangled names are not demangled
constexpr size_t kMaxDiesPerWalk = 1u << 24;     // DIEs visited to index one CU
constexpr size_t kMaxRangesPerDie = 1u << 16;    // DW_AT_ranges entries taken from one DIE
constexpr size_t kMaxCandidates = 8;             // paths tried for one module
constexpr uint32_t kDefaultMaxModules = 256;

// ---------------------------------------------------------------------------------------
// Small helpers

std::string Hex(const void *p, size_t n)
{
	static const char digits[] = "0123456789abcdef";
	const auto *b = static_cast<const unsigned char *>(p);
	std::string s;
	s.reserve(n * 2);
	for (size_t i = 0; i < n; i++) {
		s.push_back(digits[b[i] >> 4]);
		s.push_back(digits[b[i] & 15]);
	}
	return s;
}

// strerror_r is GNU-style (char *) in glibc and XSI-style (int) in musl.
[[maybe_unused]] const char *PickStrerror(int, const char *buf) { return buf; }
[[maybe_unused]] const char *PickStrerror(const char *r, const char *) { return r; }
std::string ErrnoText(int e)
{
	char buf[128] = "";
	return PickStrerror(strerror_r(e, buf, sizeof buf), buf);
}

std::string DwflError()
{
	const char *m = dwfl_errmsg(-1);
	return m ? m : "unknown libdwfl error";
}

class Fd {
public:
	explicit Fd(int fd = -1) : fd_(fd) {}
	~Fd() { reset(); }
	Fd(const Fd &) = delete;
	Fd &operator=(const Fd &) = delete;
	int get() const { return fd_; }
	int release() { int f = fd_; fd_ = -1; return f; }
	void reset(int fd = -1) { if (fd_ >= 0) close(fd_); fd_ = fd; }
private:
	int fd_;
};

// Opens path for parsing: a regular file, at most kMaxFileBytes, whose ELF identification
// is a 32- or 64-bit executable or shared object (separate debug files keep the type of
// their binary; dwz alt files are ET_REL, accepted with allow_rel). O_NONBLOCK so a FIFO
// planted at the path cannot block us. Returns the fd, or -1 with *err set.
std::string Identity(const struct stat &st);

//
// The path is first opened with O_PATH, which resolves it without opening the file, and
// only a regular file is then opened for reading, through that descriptor
// (/proc/self/fd/N: the inode checked, not the path walked again). Paths come from inside
// a profiled process's root, where a symlink (a .build-id link, a debug link's name) may
// name a device of the agent's own host: a device's open can act (a tape rewinds, a
// watchdog starts counting down) and a FIFO's blocks.
int OpenElf(const std::string &path, struct stat *st, std::string *err, bool allow_rel = false,
	    const std::string &ident = std::string())
{
	int pfd = open(path.c_str(), O_PATH | O_CLOEXEC);
	if (pfd < 0) {
		*err = path + ": " + ErrnoText(errno);
		return -1;
	}
	Fd pguard(pfd);
	if (fstat(pfd, st) != 0) {
		*err = path + ": " + ErrnoText(errno);
		return -1;
	}
	if (!ident.empty() && Identity(*st) != ident) {
		*err = path + ": not the file the process maps";
		return -1;
	}
	if (!S_ISREG(st->st_mode)) {
		*err = path + ": not a regular file";
		return -1;
	}
	if (static_cast<uint64_t>(st->st_size) > kMaxFileBytes) {
		*err = path + ": larger than " + std::to_string(kMaxFileBytes >> 20) + " MiB";
		return -1;
	}
	int fd = open(("/proc/self/fd/" + std::to_string(pfd)).c_str(),
		      O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
	if (fd < 0) {
		*err = path + ": " + ErrnoText(errno);
		return -1;
	}
	Fd guard(fd);
	struct stat again;
	if (fstat(fd, &again) != 0 || again.st_dev != st->st_dev || again.st_ino != st->st_ino) {
		*err = path + ": changed while it was opened";
		return -1;
	}
	unsigned char id[EI_NIDENT + 2];
	ssize_t n = pread(fd, id, sizeof id, 0);
	if (n != static_cast<ssize_t>(sizeof id) || std::memcmp(id, ELFMAG, SELFMAG) != 0 ||
	    (id[EI_CLASS] != ELFCLASS32 && id[EI_CLASS] != ELFCLASS64) ||
	    (id[EI_DATA] != ELFDATA2LSB && id[EI_DATA] != ELFDATA2MSB)) {
		*err = path + ": not an ELF file";
		return -1;
	}
	unsigned type = id[EI_DATA] == ELFDATA2LSB ? id[EI_NIDENT] | id[EI_NIDENT + 1] << 8
						   : id[EI_NIDENT] << 8 | id[EI_NIDENT + 1];
	if (type != ET_EXEC && type != ET_DYN && !(allow_rel && type == ET_REL)) {
		*err = path + ": ELF type " + std::to_string(type) +
		       " is not an executable or shared object";
		return -1;
	}
	return guard.release();
}

// The GNU build id of an ELF file (hex), '' if none or unreadable.
std::string BuildIdOfFd(int fd)
{
	Elf *e = elf_begin(fd, ELF_C_READ_MMAP, nullptr);
	if (!e)
		return "";
	std::string out;
	const void *id = nullptr;
	ssize_t n = dwelf_elf_gnu_build_id(e, &id);
	if (n > 0 && id)
		out = Hex(id, static_cast<size_t>(n));
	elf_end(e);
	return out;
}

// The .gnu_debugaltlink of an ELF file (dwz): the alt file's name and build id.
bool ReadAltLink(const std::string &path, std::string *name, std::string *id)
{
	struct stat st;
	std::string err;
	Fd fd(OpenElf(path, &st, &err));
	if (fd.get() < 0)
		return false;
	Elf *e = elf_begin(fd.get(), ELF_C_READ_MMAP, nullptr);
	if (!e)
		return false;
	bool ok = false;
	size_t shstrndx;
	if (elf_getshdrstrndx(e, &shstrndx) == 0) {
		for (Elf_Scn *s = elf_nextscn(e, nullptr); s && !ok; s = elf_nextscn(e, s)) {
			GElf_Shdr sh;
			if (!gelf_getshdr(s, &sh) || sh.sh_type == SHT_NOBITS)
				continue;
			const char *n = elf_strptr(e, shstrndx, sh.sh_name);
			if (!n || std::strcmp(n, ".gnu_debugaltlink") != 0)
				continue;
			Elf_Data *d = elf_getdata(s, nullptr);
			if (!d || !d->d_buf)
				break;
			const char *p = static_cast<const char *>(d->d_buf);
			size_t len = strnlen(p, d->d_size);
			if (len == 0 || len + 1 >= d->d_size)
				break;
			*name = std::string(p, len);
			*id = Hex(p + len + 1, d->d_size - len - 1);
			ok = true;
		}
	}
	elf_end(e);
	return ok;
}

// CRC-32 of a whole file, as .gnu_debuglink records it (zlib's polynomial).
bool Crc32OfFd(int fd, uint32_t *out)
{
	std::vector<unsigned char> buf(1 << 20);
	uLong crc = crc32(0L, Z_NULL, 0);
	off_t off = 0;
	for (;;) {
		ssize_t n = pread(fd, buf.data(), buf.size(), off);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return false;
		}
		if (n == 0)
			break;
		crc = crc32(crc, buf.data(), static_cast<uInt>(n));
		off += n;
		if (static_cast<uint64_t>(off) > kMaxFileBytes)
			return false;
	}
	*out = static_cast<uint32_t>(crc);
	return true;
}

std::string DirName(const std::string &p)
{
	size_t s = p.rfind('/');
	if (s == std::string::npos)
		return ".";
	if (s == 0)
		return "/";
	return p.substr(0, s);
}

std::string BaseName(const std::string &p)
{
	size_t s = p.rfind('/');
	return s == std::string::npos ? p : p.substr(s + 1);
}

std::string Join(const std::string &a, const std::string &b)
{
	if (a.empty())
		return b;
	if (a.back() == '/')
		return b.size() && b[0] == '/' ? a + b.substr(1) : a + b;
	return b.size() && b[0] == '/' ? a + b : a + "/" + b;
}

// A region's build id may be cut to 32 bytes (proto/heaptap_region.h keeps at most 32).
bool SameBuildId(const std::string &region, const std::string &file)
{
	if (region == file)
		return true;
	return region.size() == 64 && file.size() > 64 && file.compare(0, 64, region) == 0;
}

// ---------------------------------------------------------------------------------------
// One module file, open in its own Dwfl

struct ModuleFile;

struct FnRange {
	Dwarf_Addr lo, hi;
	Dwarf_Die die;   // a DW_TAG_subprogram with code at [lo, hi)
};

// The functions of one CU with their code ranges, sorted by lo, from one walk over the CU's
// DIEs: finding the function that holds an address is then a binary search, where
// dwarf_getscopes walks the CU again for every address.
struct CuIndex {
	std::vector<FnRange> fns;
};

// The scopes (inlined subroutines, lexical blocks...) of one function as a tree whose
// children are sorted by address, so the innermost scope of an address is found by a
// binary search per nesting level: large functions with hundreds of inlined calls would
// otherwise cost a walk over their DIEs for every address.
struct ScopeRange {
	Dwarf_Addr lo, hi;
	uint32_t node;
};
struct ScopeNode {
	Dwarf_Die die;
	std::vector<ScopeRange> kids;
};
struct FnTree {
	std::vector<ScopeNode> nodes;   // nodes[0] is the function
};

struct CuRange {
	Dwarf_Addr lo, hi;
	Dwarf_Die cu;
};

struct SymRange {
	Dwarf_Addr lo, hi;   // libdwfl addresses
	const char *name;    // in libelf's string table, valid while the Dwfl is
	int rank;            // which of several symbols at one address to prefer
};

struct ModuleFile {
	std::mutex mu;
	Dwfl_Callbacks callbacks{};
	Dwfl *dwfl = nullptr;
	Dwfl_Module *mod = nullptr;
	int fd = -1;                      // our checked fd; libdwfl reopens /proc/self/fd/<fd>
	std::string fd_path;
	std::string path;                 // the file used (maybe under /proc/<pid>/root)
	std::string orig_path;            // the module's path as the process sees it
	std::string build_id;             // the file's GNU build id, hex
	std::string debug_file;           // separate debug file libdwfl ended up using
	std::vector<std::string> debug_dirs;
	Dwarf_Addr elf_bias = 0;          // libdwfl address = ELF vaddr + elf_bias

	bool dwarf_tried = false;
	Dwarf *dw = nullptr;
	Dwarf_Addr dw_bias = 0;
	std::string dwarf_error;          // why the DWARF could not be used ('' if none or fine)
	bool symtab_tried = false;
	std::vector<SymRange> syms;       // function symbols by address (dwfl_module_addrsym
	                                  // scans the whole table on every call)

	std::unordered_map<const void *, CuIndex> cu_index;   // by Dwarf_Die::cu
	std::unordered_map<const void *, FnTree> fn_trees;    // by Dwarf_Die::addr
	// C++ scope prefixes ("ns::Class::") of function DIEs, for functions that have no
	// linkage name (inlined constructors, ...): recorded while indexing their CU.
	std::vector<std::string> prefixes{std::string()};
	std::unordered_map<std::string, uint32_t> prefix_ids;
	std::unordered_map<const void *, uint32_t> die_prefix;
	std::unordered_map<const void *, std::string> qualified;   // by the DIE named
	bool cu_table_built = false;
	std::vector<CuRange> cu_table;    // for files without .debug_aranges

	~ModuleFile()
	{
		if (dwfl)
			dwfl_end(dwfl);
		if (fd >= 0)
			close(fd);
	}
};

// Never called for modules reported with dwfl_report_offline (libdwfl opens the file name
// it is given); present so that libdwfl can never reach dwfl_build_id_find_elf and its
// debuginfod fallback.
int NoFindElf(Dwfl_Module *, void **, const char *, Dwarf_Addr, char **, Elf **)
{
	errno = 0;
	return -1;
}

// Opens a candidate separate debug file and checks it belongs to the module: by build id
// when want_id is set, else by the .gnu_debuglink CRC when crc is set. Returns the fd.
int TryDebugCandidate(const ModuleFile &m, const std::string &cand, const std::string &want_id,
		      uint32_t crc, bool check_crc, bool alt = false)
{
	struct stat st;
	std::string err;
	Fd fd(OpenElf(cand, &st, &err, alt));
	if (fd.get() < 0)
		return -1;
	struct stat main_st;
	if (fstat(m.fd, &main_st) == 0 && main_st.st_dev == st.st_dev && main_st.st_ino == st.st_ino)
		return -1;   // the main file by another name
	if (!want_id.empty()) {
		if (BuildIdOfFd(fd.get()) != want_id)
			return -1;
	} else if (check_crc) {
		uint32_t got;
		if (!Crc32OfFd(fd.get(), &got) || got != crc)
			return -1;
	}
	return fd.release();
}

// <dir>/.build-id/xx/yyyy.debug in each debug dir, for a build id in hex ('' : none).
std::vector<std::string> BuildIdPaths(const std::vector<std::string> &dirs, const std::string &id)
{
	std::vector<std::string> out;
	if (id.size() < 4)
		return out;
	for (const std::string &d : dirs)
		out.push_back(Join(d, ".build-id/" + id.substr(0, 2) + "/" + id.substr(2) + ".debug"));
	return out;
}

std::string ProcRootOf(const std::string &path);

// The find_debuginfo callback (see the header comment for why not the standard one).
// Called for the module's separate debug file and, when its DWARF names a dwz alt file,
// for that (debuglink_file = the alt name, crc 0).
int FindDebuginfo(Dwfl_Module *mod, void **userdata, const char *modname, Dwarf_Addr base,
		  const char *file_name, const char *debuglink_file, GElf_Word debuglink_crc,
		  char **debuginfo_file_name)
{
	(void)modname;
	(void)base;
	ModuleFile *m = userdata ? static_cast<ModuleFile *>(*userdata) : nullptr;
	errno = 0;
	if (!m)
		return -1;
	try {
		const char *named = debuglink_file ? debuglink_file : "";
		auto found = [&](int f, const std::string &name) {
			char *dup = strdup(name.c_str());
			if (!dup) {
				close(f);
				return -1;
			}
			free(*debuginfo_file_name);
			*debuginfo_file_name = dup;
			return f;
		};

		// 1. A dwz alt file: the file holding the DWARF names it in .gnu_debugaltlink
		// (name and build id), looked for by build id, then by name.
		if (debuglink_crc == 0 && file_name && *named) {
			std::string holder = std::strcmp(file_name, m->fd_path.c_str()) == 0
						     ? m->path : std::string(file_name);
			std::string alt_name, alt_id;
			if (ReadAltLink(holder, &alt_name, &alt_id) && alt_name == named) {
				std::vector<std::string> cands = BuildIdPaths(m->debug_dirs, alt_id);
				std::string base_name = BaseName(alt_name);
				if (alt_name[0] != '/') {
					cands.push_back(Join(DirName(holder), alt_name));
				} else {
					// as the process sees it (inside its root), then in the agent's
					// own file system (debug files mounted at the sidecar's)
					std::string root = ProcRootOf(holder);
					if (!root.empty())
						cands.push_back(root + alt_name);
					cands.push_back(alt_name);
				}
				cands.push_back(Join(DirName(holder), ".dwz/" + base_name));
				for (const std::string &d : m->debug_dirs) {
					cands.push_back(Join(d, base_name));
					cands.push_back(Join(d, ".dwz/" + base_name));
				}
				for (const std::string &c : cands) {
					int f = TryDebugCandidate(*m, c, alt_id, 0, false, true);
					if (f >= 0)
						return found(f, c);
				}
				errno = 0;
				return -1;
			}
		}

		// 2. <debugdir>/.build-id/xx/yyyy.debug, checked against the module's build id.
		// Opened here, not by dwfl_build_id_find_debuginfo: libdwfl opens the path itself
		// (no O_PATH check, no O_NONBLOCK), and one of the dirs is inside the process's
		// root, where the link may name a FIFO or a device of the agent's host.
		const unsigned char *bits = nullptr;
		GElf_Addr vaddr;
		int n = dwfl_module_build_id(mod, &bits, &vaddr);
		std::string want = n > 0 ? Hex(bits, static_cast<size_t>(n)) : "";
		std::vector<std::string> cands = BuildIdPaths(m->debug_dirs, want);

		// 3. .gnu_debuglink: a base name, looked for next to the file, in .debug/ there,
		// and in each debug dir under the file's directory as the process sees it (with
		// leading components dropped one by one, as gdb and elfutils do).
		std::string link = *named && !std::strchr(named, '/') ? named : "";
		if (!link.empty()) {
			std::string dir = DirName(m->path);
			cands.push_back(Join(dir, link));
			cands.push_back(Join(dir, ".debug/" + link));
			std::string odir = DirName(m->orig_path);
			for (const std::string &d : m->debug_dirs) {
				std::string sub = odir;
				for (size_t guard = 0; guard < 64; guard++) {
					cands.push_back(Join(Join(d, sub), link));
					size_t s = sub.find('/', sub[0] == '/' ? 1 : 0);
					if (sub == "/" || sub.empty() || s == std::string::npos) {
						if (!sub.empty() && sub != "/")
							cands.push_back(Join(d, link));
						break;
					}
					sub = sub.substr(s);
				}
			}
		}
		std::vector<std::string> tried;
		for (const std::string &c : cands) {
			if (std::find(tried.begin(), tried.end(), c) != tried.end())
				continue;
			tried.push_back(c);
			int f = TryDebugCandidate(*m, c, want, debuglink_crc, debuglink_crc != 0);
			if (f >= 0)
				return found(f, c);
		}
	} catch (...) {
		// bad_alloc: no debug file
	}
	errno = 0;
	return -1;
}

// The debug dirs for a file: the configured ones (the agent's own file system) and, for a
// file reached through /proc/<pid>/root/, /proc/<pid>/map_files/ or /proc/<pid>/exe, the same dirs inside that
// process's root, where an application image's debug packages put their files
// (/usr/lib/debug/.build-id/xx/yyyy.debug): in a pod, the agent's container does not have
// them, the application's does.
std::vector<std::string> DebugDirsFor(const std::string &path, const std::vector<std::string> &dirs)
{
	std::vector<std::string> out = dirs;
	std::string root = ProcRootOf(path);
	if (root.empty())
		return out;
	for (const std::string &d : dirs)
		if (!d.empty() && d[0] == '/')
			out.push_back(root + d);
	return out;
}

// "/proc/<pid>/root" for a file reached through /proc/<pid>/root/, /proc/<pid>/map_files/
// or /proc/<pid>/exe (where the process's own absolute paths are), else "".
std::string ProcRootOf(const std::string &path)
{
	static const std::string proc = "/proc/";
	if (path.compare(0, proc.size(), proc) != 0)
		return "";
	size_t end = proc.size();
	while (end < path.size() && path[end] >= '0' && path[end] <= '9')
		end++;
	if (end == proc.size() || end - proc.size() > 10)
		return "";
	std::string rest = path.substr(end);
	if (rest.compare(0, 6, "/root/") != 0 && rest != "/exe" && rest.compare(0, 11, "/map_files/") != 0)
		return "";
	return path.substr(0, end) + "/root";
}

// Opens path with libdwfl. On failure returns nullptr and sets *err.
// An open file's "major:minor:inode", as /proc/<pid>/maps shows the file a process maps.
std::string Identity(const struct stat &st)
{
	return std::to_string(major(st.st_dev)) + ":" + std::to_string(minor(st.st_dev)) + ":" +
	       std::to_string(st.st_ino);
}

// With ident set, the file opened must be that one (checked on the open descriptor, so a
// path swapped between the caller's check and this open is refused before it is read).
std::shared_ptr<ModuleFile> LoadFile(const std::string &path, const std::string &orig_path,
				     const std::vector<std::string> &debug_dirs, std::string *err,
				     const std::string &ident = std::string())
{
	struct stat st;
	int fd = OpenElf(path, &st, err, false, ident);
	if (fd < 0)
		return nullptr;
	auto m = std::make_shared<ModuleFile>();
	m->fd = fd;
	m->fd_path = "/proc/self/fd/" + std::to_string(fd);
	m->path = path;
	m->orig_path = orig_path.empty() ? path : orig_path;
	m->debug_dirs = debug_dirs;
	m->callbacks.find_elf = NoFindElf;
	m->callbacks.find_debuginfo = FindDebuginfo;
	m->callbacks.section_address = dwfl_offline_section_address;

	m->dwfl = dwfl_begin(&m->callbacks);
	if (!m->dwfl) {
		*err = path + ": " + DwflError();
		return nullptr;
	}
	m->mod = dwfl_report_offline(m->dwfl, path.c_str(), m->fd_path.c_str(), -1);
	if (!m->mod) {
		*err = path + ": cannot read ELF file: " + DwflError();
		return nullptr;
	}
	if (dwfl_report_end(m->dwfl, nullptr, nullptr) != 0) {
		*err = path + ": " + DwflError();
		return nullptr;
	}
	void **ud = nullptr;
	dwfl_module_info(m->mod, &ud, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr);
	if (ud)
		*ud = m.get();
	const unsigned char *bits = nullptr;
	GElf_Addr vaddr;
	int n = dwfl_module_build_id(m->mod, &bits, &vaddr);
	if (n > 0)
		m->build_id = Hex(bits, static_cast<size_t>(n));
	Dwarf_Addr bias = 0;
	if (!dwfl_module_getelf(m->mod, &bias)) {
		*err = path + ": cannot read ELF file: " + DwflError();
		return nullptr;
	}
	m->elf_bias = bias;
	return m;
}

void EnsureDwarf(ModuleFile &m)
{
	if (m.dwarf_tried)
		return;
	m.dwarf_tried = true;
	Dwarf_Addr bias = 0;
	m.dw = dwfl_module_getdwarf(m.mod, &bias);
	if (m.dw) {
		m.dw_bias = bias;
	} else {
		int e = dwfl_errno();
		const char *msg = dwfl_errmsg(e);
		// "no DWARF information found" is the ordinary stripped case, not an error
		if (msg && std::strstr(msg, "No DWARF") == nullptr && std::strstr(msg, "no DWARF") == nullptr)
			m.dwarf_error = std::string("debug info unusable: ") + msg;
	}
	const char *mainfile = nullptr, *debugfile = nullptr;
	dwfl_module_info(m.mod, nullptr, nullptr, nullptr, nullptr, nullptr, &mainfile, &debugfile);
	if (debugfile && (!mainfile || std::strcmp(debugfile, mainfile) != 0) &&
	    m.fd_path != debugfile)
		m.debug_file = debugfile;
}

void EnsureSymtab(ModuleFile &m)
{
	if (m.symtab_tried)
		return;
	m.symtab_tried = true;
	int n = dwfl_module_getsymtab(m.mod);
	for (int i = 1; i < n && m.syms.size() < kMaxDiesPerWalk; i++) {
		GElf_Sym sym;
		GElf_Addr addr;
		const char *name = dwfl_module_getsym_info(m.mod, i, &sym, &addr, nullptr, nullptr, nullptr);
		if (!name || !*name || sym.st_shndx == SHN_UNDEF || sym.st_size == 0)
			continue;
		int type = GELF_ST_TYPE(sym.st_info);
		if (type != STT_FUNC && type != STT_GNU_IFUNC)
			continue;
		int bind = GELF_ST_BIND(sym.st_info);
		int rank = bind == STB_GLOBAL ? 0 : bind == STB_WEAK ? 1 : 2;
		if (addr + sym.st_size > addr)
			m.syms.push_back(SymRange{addr, addr + sym.st_size, name, rank});
	}
	std::sort(m.syms.begin(), m.syms.end(), [](const SymRange &a, const SymRange &b) {
		return a.lo != b.lo ? a.lo < b.lo : a.rank < b.rank;
	});
	// one symbol per address: the preferred one (global over weak over local)
	m.syms.erase(std::unique(m.syms.begin(), m.syms.end(),
				 [](const SymRange &a, const SymRange &b) { return a.lo == b.lo; }),
		     m.syms.end());
	if (m.debug_file.empty()) {
		const char *mainfile = nullptr, *debugfile = nullptr;
		dwfl_module_info(m.mod, nullptr, nullptr, nullptr, nullptr, nullptr, &mainfile,
				 &debugfile);
		if (debugfile && (!mainfile || std::strcmp(debugfile, mainfile) != 0) &&
		    m.fd_path != debugfile)
			m.debug_file = debugfile;
	}
}

const char *SymbolAt(ModuleFile &m, Dwarf_Addr a)
{
	EnsureSymtab(m);
	auto it = std::upper_bound(m.syms.begin(), m.syms.end(), a,
				   [](Dwarf_Addr v, const SymRange &r) { return v < r.lo; });
	for (int k = 0; k < 8 && it != m.syms.begin(); k++) {
		--it;
		if (a >= it->lo && a < it->hi)
			return it->name;
	}
	return nullptr;
}

// Walks DIEs breadth-limited: siblings must move forward in the section, and at most
// kMaxDiesPerWalk are visited, so a hostile DW_AT_sibling cannot loop us.
bool NextSibling(Dwarf_Die *d, Dwarf_Die *out)
{
	if (dwarf_siblingof(d, out) != 0)
		return false;
	return dwarf_dieoffset(out) > dwarf_dieoffset(d);
}

void AddRanges(Dwarf_Die *d, std::vector<FnRange> &out)
{
	Dwarf_Addr base, lo, hi;
	ptrdiff_t off = 0;
	size_t n = 0;
	while ((off = dwarf_ranges(d, off, &base, &lo, &hi)) > 0 && n++ < kMaxRangesPerDie) {
		if (lo < hi)
			out.push_back(FnRange{lo, hi, *d});
	}
}

uint32_t ChildPrefix(ModuleFile &m, Dwarf_Die *d, int tag, uint32_t prefix)
{
	const char *name = nullptr;
	switch (tag) {
	case DW_TAG_namespace:
		name = dwarf_diename(d);
		if (!name)
			name = "(anonymous namespace)";
		break;
	case DW_TAG_class_type:
	case DW_TAG_structure_type:
	case DW_TAG_union_type:
	case DW_TAG_interface_type:
	case DW_TAG_module:
		name = dwarf_diename(d);
		break;
	default:
		break;
	}
	if (!name)
		return prefix;
	std::string p = m.prefixes[prefix] + name + "::";
	auto it = m.prefix_ids.find(p);
	if (it != m.prefix_ids.end())
		return it->second;
	uint32_t id = static_cast<uint32_t>(m.prefixes.size());
	m.prefixes.push_back(p);
	m.prefix_ids.emplace(std::move(p), id);
	return id;
}

CuIndex &IndexFor(ModuleFile &m, Dwarf_Die *cudie)
{
	auto it = m.cu_index.find(cudie->cu);
	if (it != m.cu_index.end())
		return it->second;
	CuIndex &ix = m.cu_index[cudie->cu];
	struct Item {
		Dwarf_Die die;
		uint32_t prefix;
	};
	std::vector<Item> stack;
	Dwarf_Die child;
	if (dwarf_child(cudie, &child) == 0)
		stack.push_back(Item{child, 0});
	size_t visited = 0;
	Dwarf_Off last = 0;
	while (!stack.empty() && visited++ < kMaxDiesPerWalk) {
		Item item = stack.back();
		Dwarf_Die &d = item.die;
		stack.pop_back();
		// Pre-order over a well-formed tree visits DIEs in section order; a DIE that does
		// not come after the last one is reached a second way (hostile child or sibling
		// links) and is skipped, so the walk is linear in the CU's size.
		Dwarf_Off off = dwarf_dieoffset(&d);
		if (visited > 1 && off <= last)
			continue;
		last = off;
		Dwarf_Die sib;
		if (NextSibling(&d, &sib))
			stack.push_back(Item{sib, item.prefix});
		// Every DIE is visited once: functions can be nested in namespaces and classes,
		// and (lambdas, local classes, GNU C nested functions) in other functions.
		int tag = dwarf_tag(&d);
		if (tag == DW_TAG_subprogram) {
			AddRanges(&d, ix.fns);
			if (item.prefix != 0)
				m.die_prefix.emplace(d.addr, item.prefix);
		}
		Dwarf_Die c;
		if (dwarf_haschildren(&d) > 0 && dwarf_child(&d, &c) == 0)
			stack.push_back(Item{c, ChildPrefix(m, &d, tag, item.prefix)});
	}
	std::sort(ix.fns.begin(), ix.fns.end(),
		  [](const FnRange &a, const FnRange &b) { return a.lo < b.lo; });
	return ix;
}

// The CU holding pc (a DWARF address) from the CUs' own ranges: libdw finds CUs through
// .debug_aranges, which clang does not emit by default.
bool FindCuByRanges(ModuleFile &m, Dwarf_Addr pc, Dwarf_Die *out)
{
	if (!m.cu_table_built) {
		m.cu_table_built = true;
		Dwarf_Off off = 0, next;
		size_t hsize;
		size_t units = 0;
		while (dwarf_nextcu(m.dw, off, &next, &hsize, nullptr, nullptr, nullptr) == 0 &&
		       units++ < kMaxDiesPerWalk) {
			Dwarf_Die cu;
			if (dwarf_offdie(m.dw, off + hsize, &cu)) {
				Dwarf_Addr base, lo, hi;
				ptrdiff_t r = 0;
				size_t n = 0;
				while ((r = dwarf_ranges(&cu, r, &base, &lo, &hi)) > 0 &&
				       n++ < kMaxRangesPerDie)
					if (lo < hi)
						m.cu_table.push_back(CuRange{lo, hi, cu});
			}
			if (next <= off)
				break;
			off = next;
		}
		std::sort(m.cu_table.begin(), m.cu_table.end(),
			  [](const CuRange &a, const CuRange &b) { return a.lo < b.lo; });
	}
	auto it = std::upper_bound(m.cu_table.begin(), m.cu_table.end(), pc,
				   [](Dwarf_Addr v, const CuRange &r) { return v < r.lo; });
	for (int k = 0; k < 8 && it != m.cu_table.begin(); k++) {
		--it;
		if (pc >= it->lo && pc < it->hi) {
			*out = it->cu;
			return true;
		}
	}
	return false;
}

bool IsScope(int tag)
{
	switch (tag) {
	case DW_TAG_inlined_subroutine:
	case DW_TAG_lexical_block:
	case DW_TAG_try_block:
	case DW_TAG_catch_block:
	case DW_TAG_with_stmt:
		return true;
	default:
		return false;
	}
}

bool HasPcAttrs(Dwarf_Die *d)
{
	return dwarf_hasattr(d, DW_AT_low_pc) || dwarf_hasattr(d, DW_AT_ranges);
}

const FnTree &TreeFor(ModuleFile &m, const Dwarf_Die &fn)
{
	auto it = m.fn_trees.find(fn.addr);
	if (it != m.fn_trees.end())
		return it->second;
	FnTree &t = m.fn_trees[fn.addr];
	t.nodes.push_back(ScopeNode{fn, {}});
	// Pre-order walk of the function's DIEs, in section order as in IndexFor. A scope
	// without code ranges (a lexical block kept only for its variables) is transparent:
	// its children belong to its parent's node.
	struct Item {
		Dwarf_Die die;
		uint32_t node;   // the scope node the DIE's scope nests in
	};
	std::vector<Item> stack;
	Dwarf_Die first, root = fn;
	if (dwarf_child(&root, &first) == 0)
		stack.push_back(Item{first, 0});
	std::vector<FnRange> ranges;
	size_t visited = 0;
	Dwarf_Off last = dwarf_dieoffset(&root);
	while (!stack.empty() && visited++ < kMaxDiesPerWalk) {
		Item item = stack.back();
		stack.pop_back();
		Dwarf_Die &c = item.die;
		Dwarf_Off off = dwarf_dieoffset(&c);
		if (off <= last)
			continue;
		last = off;
		Dwarf_Die s;
		if (dwarf_siblingof(&c, &s) == 0)
			stack.push_back(Item{s, item.node});
		if (!IsScope(dwarf_tag(&c)))
			continue;
		uint32_t inner = item.node;
		if (HasPcAttrs(&c)) {
			ranges.clear();
			AddRanges(&c, ranges);
			if (ranges.empty())
				continue;
			inner = static_cast<uint32_t>(t.nodes.size());
			t.nodes.push_back(ScopeNode{c, {}});
			for (const FnRange &r : ranges)
				t.nodes[item.node].kids.push_back(ScopeRange{r.lo, r.hi, inner});
		}
		Dwarf_Die k;
		if (dwarf_haschildren(&c) > 0 && dwarf_child(&c, &k) == 0)
			stack.push_back(Item{k, inner});
	}
	for (ScopeNode &n : t.nodes)
		std::sort(n.kids.begin(), n.kids.end(),
			  [](const ScopeRange &a, const ScopeRange &b) { return a.lo < b.lo; });
	return t;
}

// Fills chain with the DIEs holding pc, outermost (the DW_TAG_subprogram) first.
bool ScopeChain(ModuleFile &m, Dwarf_Die *cudie, Dwarf_Addr pc, std::vector<Dwarf_Die> &chain)
{
	chain.clear();
	CuIndex &ix = IndexFor(m, cudie);
	auto it = std::upper_bound(ix.fns.begin(), ix.fns.end(), pc,
				   [](Dwarf_Addr v, const FnRange &r) { return v < r.lo; });
	const FnRange *hit = nullptr;
	for (int k = 0; k < 8 && it != ix.fns.begin(); k++) {
		--it;
		if (pc >= it->lo && pc < it->hi) {
			hit = &*it;
			break;
		}
	}
	if (hit) {
		const FnTree &t = TreeFor(m, hit->die);
		uint32_t cur = 0;
		chain.push_back(t.nodes[0].die);
		while (chain.size() < kMaxInlineDepth) {
			const std::vector<ScopeRange> &kids = t.nodes[cur].kids;
			auto k = std::upper_bound(kids.begin(), kids.end(), pc,
						  [](Dwarf_Addr v, const ScopeRange &r) { return v < r.lo; });
			bool down = false;
			for (int back = 0; back < 8 && k != kids.begin(); back++) {
				--k;
				if (pc >= k->lo && pc < k->hi) {
					cur = k->node;
					chain.push_back(t.nodes[cur].die);
					down = true;
					break;
				}
			}
			if (!down)
				break;
		}
		return true;
	}

	return false;
}

const char *AttrString(Dwarf_Die *d, unsigned name)
{
	Dwarf_Attribute a;
	if (!dwarf_attr_integrate(d, name, &a))
		return nullptr;
	return dwarf_formstring(&a);
}

const char *CallFile(Dwarf_Die *d)
{
	Dwarf_Attribute a;
	Dwarf_Word idx;
	if (dwarf_formudata(dwarf_attr(d, DW_AT_call_file, &a), &idx) != 0)
		return nullptr;
	Dwarf_Die cu;
	if (!dwarf_diecu(d, &cu, nullptr, nullptr))
		return nullptr;
	Dwarf_Files *files;
	size_t nfiles;
	if (dwarf_getsrcfiles(&cu, &files, &nfiles) != 0 || idx >= nfiles)
		return nullptr;
	return dwarf_filesrc(files, idx, nullptr, nullptr);
}

int CallLine(Dwarf_Die *d)
{
	Dwarf_Attribute a;
	Dwarf_Word v;
	if (dwarf_formudata(dwarf_attr(d, DW_AT_call_line, &a), &v) != 0 || v > INT32_MAX)
		return 0;
	return static_cast<int>(v);
}

int DeclLine(Dwarf_Die *d)
{
	int line = 0;
	if (dwarf_decl_line(d, &line) != 0 || line < 0)
		return 0;
	return line;
}

// ---------------------------------------------------------------------------------------
// Results: distinct frames as rows of string-table indices, so the JS side gets a few typed
// arrays and makes one object per distinct frame

struct FrameKey {
	uint32_t fn, sys, file;
	int32_t line, start;
	bool operator==(const FrameKey &o) const
	{
		return fn == o.fn && sys == o.sys && file == o.file && line == o.line && start == o.start;
	}
};
struct FrameKeyHash {
	size_t operator()(const FrameKey &k) const
	{
		uint64_t h = k.fn * 0x9e3779b97f4a7c15ull;
		h ^= (h >> 29) + k.sys * 0xbf58476d1ce4e5b9ull;
		h ^= (h >> 31) + k.file * 0x94d049bb133111ebull;
		h ^= (h >> 29) + static_cast<uint32_t>(k.line) * 0x9e3779b97f4a7c15ull;
		h ^= (h >> 32) + static_cast<uint32_t>(k.start);
		return static_cast<size_t>(h);
	}
};

// Names that a demangler can read: Itanium C++ and Rust legacy (_Z...), Rust v0 (_R...).
bool IsMangled(const std::string &s)
{
	return s.compare(0, 2, "_Z") == 0 || (s.compare(0, 2, "_R") == 0 && s.size() > 2 && s[2] >= 'A' && s[2] <= 'Z');
}

// Worth a try with the Rust demangler: v0 names, and _ZN names whose last part looks like
// a legacy hash ("17h" + 16 hex digits + "E"); the demangler checks the rest.
bool IsRustCandidate(const std::string &s)
{
	if (s.compare(0, 2, "_R") == 0)
		return IsMangled(s);
	return s.size() > 24 && s.compare(0, 3, "_ZN") == 0 && s.compare(s.size() - 20, 3, "17h") == 0 && s.back() == 'E';
}

struct Result {
	std::string path, debug_file, error, file_build_id;
	bool found = false, loaded = false, has_dwarf = false;
	bool has_functions = false, has_filenames = false, has_lines = false, has_inline = false;
	std::vector<std::string> strings;
	std::unordered_map<std::string, uint32_t> by_text;
	std::unordered_map<const char *, uint32_t> by_ptr;        // libdw strings are stable
	std::unordered_map<const char *, uint32_t> demangled;     // linkage name -> demangled
	std::unordered_map<std::string, uint32_t> demangled_text;
	// Distinct frames, 5 ints each: function, systemName, file (indices into strings),
	// line, startLine. Address i has frames list[starts[i] .. starts[i+1]-1].
	std::vector<int32_t> frames;
	std::unordered_map<FrameKey, uint32_t, FrameKeyHash> frame_ids;
	std::vector<uint32_t> starts;
	std::vector<uint32_t> list;

	uint32_t Intern(const std::string &s)
	{
		auto it = by_text.find(s);
		if (it != by_text.end())
			return it->second;
		uint32_t i = static_cast<uint32_t>(strings.size());
		strings.push_back(s);
		by_text.emplace(s, i);
		return i;
	}
	uint32_t Intern(const char *s)
	{
		if (!s)
			return Intern(std::string());
		auto it = by_ptr.find(s);
		if (it != by_ptr.end())
			return it->second;
		uint32_t i = Intern(std::string(s));
		by_ptr.emplace(s, i);
		return i;
	}
	// The demangled form of a name, cached by the name's address: only for strings that
	// live as long as the Dwfl (libdw's and libelf's).
	uint32_t Demangled(const char *mangled)
	{
		auto it = demangled.find(mangled);
		if (it != demangled.end())
			return it->second;
		uint32_t i = DemangledText(mangled);
		demangled.emplace(mangled, i);
		return i;
	}
	uint32_t DemangledText(const std::string &mangled)
	{
		auto it = demangled_text.find(mangled);
		if (it != demangled_text.end())
			return it->second;
		uint32_t i;
		char *d = nullptr;
		int status = -1;
		if (mangled.size() <= kMaxNameBytes && IsRustCandidate(mangled)) {
			// Rust: v0 (_R...) and legacy (_ZN...17h<16 hex>E), printed as rustfilt and
			// rustc-demangle print them, the legacy hash dropped (DMGL_VERBOSE would keep
			// it). NULL for a name that is not Rust's: a plain C++ _ZN name goes on below.
			d = rust_demangle(mangled.c_str(), DMGL_PARAMS | DMGL_ANSI);
			if (d)
				status = 0;
		}
		if (!d && mangled.size() <= kMaxNameBytes && mangled.compare(0, 2, "_Z") == 0)
			d = abi::__cxa_demangle(mangled.c_str(), nullptr, nullptr, &status);
		if (d && status == 0)
			i = Intern(std::string(d));
		else
			i = Intern(mangled);
		free(d);
		demangled_text.emplace(mangled, i);
		return i;
	}
	void Frame(uint32_t fn, uint32_t sys, const char *file, int line, int start_line)
	{
		FrameKey k{fn, sys, Intern(file), line, start_line};
		auto it = frame_ids.find(k);
		uint32_t id;
		if (it != frame_ids.end()) {
			id = it->second;
		} else {
			id = static_cast<uint32_t>(frames.size() / 5);
			frames.insert(frames.end(), {static_cast<int32_t>(k.fn), static_cast<int32_t>(k.sys),
						     static_cast<int32_t>(k.file), k.line, k.start});
			frame_ids.emplace(k, id);
		}
		list.push_back(id);
		if (!strings[fn].empty())
			has_functions = true;
		if (file && *file)
			has_filenames = true;
		if (line > 0)
			has_lines = true;
	}
};

// A symbol name without the suffixes compilers give clones and split parts (foo.cold,
// foo.isra.0, foo.constprop.1, foo.part.0, foo.lto_priv.0, foo.llvm.123), so that the
// parts of one function share its name, as they share it in DWARF. Other dots (Go's
// "runtime.mallocgc") stay.
std::string StripCloneSuffix(const char *name)
{
	static const char *const kinds[] = {"cold", "isra", "constprop", "part", "lto_priv",
					    "llvm", "localalias", "specialized"};
	std::string s = name;
	for (;;) {
		size_t dot = s.rfind('.');
		if (dot == std::string::npos || dot == 0)
			return s;
		std::string tail = s.substr(dot + 1);
		bool digits = !tail.empty() && tail.find_first_not_of("0123456789") == std::string::npos;
		size_t cut = std::string::npos;
		if (digits) {
			size_t dot2 = s.rfind('.', dot - 1);
			if (dot2 != std::string::npos && dot2 > 0) {
				std::string kind = s.substr(dot2 + 1, dot - dot2 - 1);
				for (const char *k : kinds)
					if (kind == k)
						cut = dot2;
			}
		} else {
			for (const char *k : kinds)
				if (tail == k && (tail == "cold" || tail == "localalias"))
					cut = dot;
		}
		if (cut == std::string::npos)
			return s;
		s.resize(cut);
	}
}

// The qualified name ("ns::Class::name") of a function DIE without a linkage name, from the
// scope prefixes recorded while indexing; nullptr if it has no DW_AT_name.
const char *QualifiedName(ModuleFile &m, Dwarf_Die *d)
{
	auto q = m.qualified.find(d->addr);
	if (q != m.qualified.end())
		return q->second.c_str();
	const char *name = AttrString(d, DW_AT_name);
	if (!name || !*name)
		return nullptr;
	// the prefix is recorded for the declaration: follow abstract_origin / specification
	uint32_t prefix = 0;
	Dwarf_Die cur = *d;
	for (int hop = 0; hop < 8; hop++) {
		auto it = m.die_prefix.find(cur.addr);
		if (it != m.die_prefix.end()) {
			prefix = it->second;
			break;
		}
		Dwarf_Attribute a;
		Dwarf_Die next;
		if (!(dwarf_attr(&cur, DW_AT_abstract_origin, &a) || dwarf_attr(&cur, DW_AT_specification, &a)) ||
		    !dwarf_formref_die(&a, &next))
			break;
		cur = next;
	}
	std::string full = m.prefixes[prefix] + name;
	return m.qualified.emplace(d->addr, std::move(full)).first->second.c_str();
}

// Names of a function DIE: (function, systemName) as string indices; false if it has none.
// outermost: the function the address is physically in, for which the ELF symbol is a
// better name than an unqualified DWARF one (C++ functions with internal linkage have no
// DW_AT_linkage_name).
bool DieNames(ModuleFile &m, Result &r, Dwarf_Die *d, Dwarf_Addr a, bool outermost,
	      uint32_t *fn, uint32_t *sys);

bool ElfSymbol(ModuleFile &m, Result &r, Dwarf_Addr a, uint32_t *fn, uint32_t *sys)
{
	const char *name = SymbolAt(m, a);
	if (!name || !*name)
		return false;
	std::string base = StripCloneSuffix(name);
	*sys = r.Intern(base);
	*fn = r.DemangledText(base);
	return true;
}

bool DieNames(ModuleFile &m, Result &r, Dwarf_Die *d, Dwarf_Addr a, bool outermost,
	      uint32_t *fn, uint32_t *sys)
{
	const char *link = AttrString(d, DW_AT_linkage_name);
	if (!link)
		link = AttrString(d, DW_AT_MIPS_linkage_name);
	if (link && *link) {
		*sys = r.Intern(link);
		*fn = r.Demangled(link);
		return true;
	}
	if (outermost) {
		uint32_t efn, esys;
		if (ElfSymbol(m, r, a, &efn, &esys) && IsMangled(r.strings[esys])) {
			*fn = efn;
			*sys = esys;
			return true;
		}
	}
	const char *q = QualifiedName(m, d);
	if (q) {
		*sys = *fn = r.Intern(q);
		return true;
	}
	return false;
}

// Frames for one ELF virtual address, innermost first, appended to r.rows.
void ResolveOne(ModuleFile &m, Result &r, uint64_t vaddr, std::vector<Dwarf_Die> &chain)
{
	Dwarf_Addr a = vaddr + m.elf_bias;
	const char *file = nullptr;
	int line = 0;
	Dwarf_Die *cu = nullptr;
	Dwarf_Die cubuf;
	Dwarf_Addr cubias = 0;
	if (m.dw) {
		cu = dwfl_module_addrdie(m.mod, a, &cubias);
		if (!cu && a >= m.dw_bias && FindCuByRanges(m, a - m.dw_bias, &cubuf)) {
			cu = &cubuf;
			cubias = m.dw_bias;
		}
		if (cu) {
			Dwarf_Line *dl = dwarf_getsrc_die(cu, a - cubias);
			if (dl) {
				file = dwarf_linesrc(dl, nullptr, nullptr);
				if (dwarf_lineno(dl, &line) != 0 || line < 0)
					line = 0;
			}
		}
	}
	size_t before = r.list.size();
	if (cu && ScopeChain(m, cu, a - cubias, chain)) {
		r.has_inline = true;
		for (size_t k = chain.size(); k-- > 0;) {
			Dwarf_Die *d = &chain[k];
			int tag = dwarf_tag(d);
			if (tag != DW_TAG_inlined_subroutine && tag != DW_TAG_subprogram)
				continue;
			uint32_t fn, sys;
			bool named = DieNames(m, r, d, a, tag == DW_TAG_subprogram, &fn, &sys);
			if (!named && tag == DW_TAG_subprogram)
				named = ElfSymbol(m, r, a, &fn, &sys);
			if (!named)
				fn = sys = r.Intern("");
			r.Frame(fn, sys, file, line, DeclLine(d));
			if (tag == DW_TAG_subprogram)
				break;
			file = CallFile(d);
			line = CallLine(d);
		}
	}
	if (r.list.size() == before) {
		// No DWARF function here: the ELF symbol, with the line table's answer if any.
		uint32_t fn, sys;
		if (ElfSymbol(m, r, a, &fn, &sys))
			r.Frame(fn, sys, file, line, 0);
		else if (file)
			r.Frame(r.Intern(""), r.Intern(""), file, line, 0);
	}
}

// ---------------------------------------------------------------------------------------
// The cache of open module files (LRU) and a request

struct Core {
	std::mutex mu;
	using Entry = std::pair<std::string, std::shared_ptr<ModuleFile>>;
	std::list<Entry> lru;   // most recent first
	std::unordered_map<std::string, std::list<Entry>::iterator> map;
	size_t max_modules = kDefaultMaxModules;
	std::vector<std::string> debug_dirs;
	bool closed = false;
	uint64_t loads = 0, hits = 0;

	std::shared_ptr<ModuleFile> Get(const std::string &key)
	{
		std::lock_guard<std::mutex> g(mu);
		auto it = map.find(key);
		if (it == map.end())
			return nullptr;
		lru.splice(lru.begin(), lru, it->second);
		hits++;
		return it->second->second;
	}

	// Inserts m (or returns the entry another thread inserted meanwhile). Evicted files
	// are closed by the caller's thread once the last user lets go.
	std::shared_ptr<ModuleFile> Put(const std::string &key, std::shared_ptr<ModuleFile> m,
					std::vector<std::shared_ptr<ModuleFile>> *evicted)
	{
		std::lock_guard<std::mutex> g(mu);
		loads++;
		if (closed)
			return m;
		auto it = map.find(key);
		if (it != map.end()) {
			lru.splice(lru.begin(), lru, it->second);
			return it->second->second;
		}
		lru.emplace_front(key, m);
		map[key] = lru.begin();
		while (lru.size() > max_modules) {
			evicted->push_back(std::move(lru.back().second));
			map.erase(lru.back().first);
			lru.pop_back();
		}
		return m;
	}

	// Forgets m under every key (a file that changed while it was read).
	void Drop(const std::shared_ptr<ModuleFile> &m, std::vector<std::shared_ptr<ModuleFile>> *evicted)
	{
		std::lock_guard<std::mutex> g(mu);
		for (auto it = lru.begin(); it != lru.end();) {
			if (it->second == m) {
				map.erase(it->first);
				evicted->push_back(std::move(it->second));
				it = lru.erase(it);
			} else {
				++it;
			}
		}
	}

	void Clear(std::vector<std::shared_ptr<ModuleFile>> *evicted)
	{
		std::lock_guard<std::mutex> g(mu);
		for (auto &e : lru)
			evicted->push_back(std::move(e.second));
		lru.clear();
		map.clear();
	}
};

struct Request {
	std::vector<std::string> candidates;   // paths to try, in order
	std::vector<std::string> identities;   // per candidate "major:minor:inode" it must be
					       // (what the process maps), '' = not checked
	std::string orig_path;                 // the module path as the process sees it
	std::string build_id;                  // the region's (hex), '' if none
	std::vector<uint64_t> addrs;           // ELF virtual addresses
};

std::string FileKey(const struct stat &st)
{
	return "f:" + std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino) + ":" +
	       std::to_string(st.st_size) + ":" + std::to_string(st.st_mtim.tv_sec) + "." +
	       std::to_string(st.st_mtim.tv_nsec);
}

std::shared_ptr<ModuleFile> Acquire(Core &core, const Request &q, Result &r)
{
	std::vector<std::shared_ptr<ModuleFile>> evicted;
	if (!q.build_id.empty()) {
		if (auto m = core.Get("b:" + q.build_id))
			return m;
	}
	std::vector<std::string> errors;
	for (size_t ci = 0; ci < q.candidates.size(); ci++) {
		const std::string &path = q.candidates[ci];
		std::string key;
		if (q.build_id.empty()) {
			struct stat st;
			if (stat(path.c_str(), &st) != 0) {
				errors.push_back(path + ": " + ErrnoText(errno));
				continue;
			}
			if (ci < q.identities.size() && !q.identities[ci].empty() &&
			    Identity(st) != q.identities[ci]) {
				errors.push_back(path + ": not the file the process maps");
				continue;
			}
			key = FileKey(st);
			if (auto m = core.Get(key))
				return m;
		} else {
			key = "b:" + q.build_id;
		}
		std::string err;
		const std::string &ident = q.identities.size() > ci ? q.identities[ci] : std::string();
		auto m = LoadFile(path, q.orig_path, DebugDirsFor(path, core.debug_dirs), &err, ident);
		if (!m) {
			errors.push_back(err);
			continue;
		}
		if (!q.build_id.empty() && !SameBuildId(q.build_id, m->build_id)) {
			errors.push_back(path + ": build id " +
					 (m->build_id.empty() ? std::string("(none)") : m->build_id) +
					 " does not match the process's " + q.build_id +
					 " (the file was replaced on disk, or is another build)");
			r.file_build_id = m->build_id;
			continue;
		}
		r.loaded = true;
		return core.Put(key, std::move(m), &evicted);
	}
	std::string all;
	for (const std::string &e : errors)
		all += (all.empty() ? "" : "; ") + e;
	r.error = all.empty() ? "no path to open" : all;
	return nullptr;
}

void RunGuarded(Core &core, const Request &q, Result &r, std::shared_ptr<ModuleFile> *used);

// Never throws. Module files may be truncated by their owner while libelf reads them: the
// reads run with htr_zero_fill (reader.h), and a file that faulted is dropped with all it
// answered (its next use opens it again, at its new size).
void Run(Core &core, const Request &q, Result &r)
{
	std::shared_ptr<ModuleFile> used;
	htr_zero_fill_begin();
	RunGuarded(core, q, r, &used);
	unsigned filled = htr_zero_fill_end();
	if (!filled)
		return;
	std::vector<std::shared_ptr<ModuleFile>> evicted;
	if (used)
		core.Drop(used, &evicted);
	used.reset();
	r = Result();
	r.error = "the file changed while it was read (truncated under the reader): nothing it "
		  "gave is used, and it is opened again next time";
	r.starts.assign(q.addrs.size() + 1, 0);
}

void RunGuarded(Core &core, const Request &q, Result &r, std::shared_ptr<ModuleFile> *used)
{
	try {
		std::shared_ptr<ModuleFile> m = Acquire(core, q, r);
		*used = m;
		if (!m) {
			r.starts.assign(q.addrs.size() + 1, 0);
			return;
		}
		std::lock_guard<std::mutex> g(m->mu);
		EnsureDwarf(*m);
		r.found = true;
		r.path = m->path;
		r.has_dwarf = m->dw != nullptr;
		r.file_build_id = m->build_id;
		r.error = m->dwarf_error;
		r.starts.reserve(q.addrs.size() + 1);
		std::vector<Dwarf_Die> chain;
		chain.reserve(16);
		for (uint64_t a : q.addrs) {
			r.starts.push_back(static_cast<uint32_t>(r.list.size()));
			ResolveOne(*m, r, a, chain);
		}
		r.starts.push_back(static_cast<uint32_t>(r.list.size()));
		if (!r.has_dwarf)
			r.has_inline = false;
		r.debug_file = m->debug_file;
	} catch (const std::bad_alloc &) {
		r = Result();
		r.error = "out of memory while symbolizing";
		r.starts.assign(q.addrs.size() + 1, 0);
	} catch (const std::exception &e) {
		r = Result();
		r.error = std::string("symbolizer error: ") + e.what();
		r.starts.assign(q.addrs.size() + 1, 0);
	}
}

// ---------------------------------------------------------------------------------------
// JS binding

Napi::Object ToJs(Napi::Env env, const Result &r)
{
	Napi::Object o = Napi::Object::New(env);
	o.Set("path", Napi::String::New(env, r.path));
	o.Set("debugFile", Napi::String::New(env, r.debug_file));
	o.Set("error", Napi::String::New(env, r.error));
	o.Set("fileBuildId", Napi::String::New(env, r.file_build_id));
	o.Set("found", Napi::Boolean::New(env, r.found));
	o.Set("loaded", Napi::Boolean::New(env, r.loaded));
	o.Set("hasDwarf", Napi::Boolean::New(env, r.has_dwarf));
	o.Set("hasFunctions", Napi::Boolean::New(env, r.has_functions));
	o.Set("hasFilenames", Napi::Boolean::New(env, r.has_filenames));
	o.Set("hasLineNumbers", Napi::Boolean::New(env, r.has_lines));
	o.Set("hasInlineFrames", Napi::Boolean::New(env, r.has_inline));
	Napi::Array strings = Napi::Array::New(env, r.strings.size());
	for (size_t i = 0; i < r.strings.size(); i++)
		strings.Set(static_cast<uint32_t>(i), Napi::String::New(env, r.strings[i]));
	o.Set("strings", strings);
	Napi::Int32Array frames = Napi::Int32Array::New(env, r.frames.size());
	if (!r.frames.empty())
		std::memcpy(frames.Data(), r.frames.data(), r.frames.size() * sizeof(int32_t));
	o.Set("frames", frames);
	Napi::Uint32Array starts = Napi::Uint32Array::New(env, r.starts.size());
	if (!r.starts.empty())
		std::memcpy(starts.Data(), r.starts.data(), r.starts.size() * sizeof(uint32_t));
	o.Set("starts", starts);
	Napi::Uint32Array list = Napi::Uint32Array::New(env, r.list.size());
	if (!r.list.empty())
		std::memcpy(list.Data(), r.list.data(), r.list.size() * sizeof(uint32_t));
	o.Set("list", list);
	return o;
}

class ResolveWorker : public Napi::AsyncWorker {
public:
	ResolveWorker(Napi::Env env, std::shared_ptr<Core> core, Request q)
		: Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)),
		  core_(std::move(core)), q_(std::move(q))
	{
	}
	Napi::Promise Promise() const { return deferred_.Promise(); }
	void Execute() override { Run(*core_, q_, r_); }
	void OnOK() override
	{
		Napi::Env env = Env();
		Napi::HandleScope scope(env);
		try {
			deferred_.Resolve(ToJs(env, r_));
		} catch (const Napi::Error &e) {
			deferred_.Reject(e.Value());
		}
	}

private:
	Napi::Promise::Deferred deferred_;
	std::shared_ptr<Core> core_;
	Request q_;
	Result r_;
};

class Symbolizer : public Napi::ObjectWrap<Symbolizer> {
public:
	static Napi::Function Define(Napi::Env env)
	{
		return DefineClass(env, "Symbolizer",
				   {
					   InstanceMethod("resolve", &Symbolizer::Resolve),
					   InstanceMethod("resolveAsync", &Symbolizer::ResolveAsync),
					   InstanceMethod("stats", &Symbolizer::Stats),
					   InstanceMethod("close", &Symbolizer::Close),
					   InstanceMethod("closeFiles", &Symbolizer::CloseFiles),
				   });
	}

	// JS: new Symbolizer(opts: { debugDirs: string[], maxModules?: number })
	// debugDirs: absolute directories without ':' searched for <dir>/.build-id/xx/yyyy.debug
	// and <dir>/<module's directory>/<debuglink>. maxModules bounds the open files (LRU).
	explicit Symbolizer(const Napi::CallbackInfo &info) : Napi::ObjectWrap<Symbolizer>(info)
	{
		Napi::Env env = info.Env();
		core_ = std::make_shared<Core>();
		if (info.Length() < 1 || !info[0].IsObject())
			throw Napi::TypeError::New(env, "options must be an object");
		Napi::Object o = info[0].As<Napi::Object>();
		Napi::Value dirs = o.Get("debugDirs");
		if (!dirs.IsArray())
			throw Napi::TypeError::New(env, "options.debugDirs must be an array of strings");
		Napi::Array a = dirs.As<Napi::Array>();
		for (uint32_t i = 0; i < a.Length(); i++) {
			Napi::Value v = a.Get(i);
			if (!v.IsString())
				throw Napi::TypeError::New(env, "options.debugDirs must be an array of strings");
			std::string d = v.As<Napi::String>().Utf8Value();
			if (d.empty() || d[0] != '/' || d.find(':') != std::string::npos ||
			    d.find('\0') != std::string::npos)
				throw Napi::TypeError::New(env, "debug dir must be an absolute path without ':': " + d);
			core_->debug_dirs.push_back(d);
		}
		Napi::Value mm = o.Get("maxModules");
		if (!mm.IsUndefined()) {
			double d = mm.IsNumber() ? mm.As<Napi::Number>().DoubleValue() : -1;
			if (!(d >= 1 && d <= 1e6) || d != static_cast<double>(static_cast<uint32_t>(d)))
				throw Napi::RangeError::New(env, "options.maxModules must be an integer in [1, 1e6]");
			core_->max_modules = static_cast<size_t>(d);
		}
	}

	~Symbolizer() override { Release(); }

private:
	void Release()
	{
		if (!core_)
			return;
		std::vector<std::shared_ptr<ModuleFile>> evicted;
		{
			std::lock_guard<std::mutex> g(core_->mu);
			core_->closed = true;
		}
		core_->Clear(&evicted);
		// evicted files close here unless a worker still holds them
	}

	Request Args(const Napi::CallbackInfo &info)
	{
		Napi::Env env = info.Env();
		{
			std::lock_guard<std::mutex> g(core_->mu);
			if (core_->closed)
				throw Napi::Error::New(env, "the symbolizer is closed");
		}
		if (info.Length() < 4 || !info[0].IsArray() || !info[1].IsString() ||
		    !info[2].IsString() || !info[3].IsTypedArray() ||
		    info[3].As<Napi::TypedArray>().TypedArrayType() != napi_biguint64_array)
			throw Napi::TypeError::New(env,
				"expected (candidates: string[], origPath: string, buildId: string, addrs: BigUint64Array)");
		Request q;
		Napi::Array c = info[0].As<Napi::Array>();
		for (uint32_t i = 0; i < c.Length() && q.candidates.size() < kMaxCandidates; i++) {
			Napi::Value v = c.Get(i);
			if (!v.IsString())
				throw Napi::TypeError::New(env, "candidates must be strings");
			std::string p = v.As<Napi::String>().Utf8Value();
			if (p.empty() || p.find('\0') != std::string::npos)
				throw Napi::TypeError::New(env, "a candidate path is empty or has a NUL");
			q.candidates.push_back(std::move(p));
		}
		// identities (optional, 5th): per candidate, the "major:minor:inode" it must be.
		if (info.Length() >= 5 && !info[4].IsUndefined()) {
			if (!info[4].IsArray())
				throw Napi::TypeError::New(env, "identities must be an array of strings");
			Napi::Array ids = info[4].As<Napi::Array>();
			for (uint32_t i = 0; i < ids.Length() && i < q.candidates.size(); i++) {
				Napi::Value v = ids.Get(i);
				if (!v.IsString())
					throw Napi::TypeError::New(env, "identities must be strings");
				q.identities.push_back(v.As<Napi::String>().Utf8Value());
			}
		}
		q.orig_path = info[1].As<Napi::String>().Utf8Value();
		q.build_id = info[2].As<Napi::String>().Utf8Value();
		for (char ch : q.build_id)
			if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f')))
				throw Napi::TypeError::New(env, "buildId must be lowercase hex");
		Napi::BigUint64Array a = info[3].As<Napi::BigUint64Array>();
		q.addrs.assign(a.Data(), a.Data() + a.ElementLength());
		return q;
	}

	// JS: resolve(candidates: string[], origPath: string, buildId: string,
	//             addrs: BigUint64Array): NativeSymbols
	// Opens the first candidate whose build id matches buildId (any, if buildId is ''), or
	// reuses the file already open for that build id, and resolves each ELF virtual
	// address. Never throws for file or debug-info problems: they are in .error.
	Napi::Value Resolve(const Napi::CallbackInfo &info)
	{
		Request q = Args(info);
		Result r;
		Run(*core_, q, r);
		return ToJs(info.Env(), r);
	}

	// JS: resolveAsync(candidates, origPath, buildId, addrs): Promise<NativeSymbols>
	// The same on the libuv thread pool.
	Napi::Value ResolveAsync(const Napi::CallbackInfo &info)
	{
		Request q = Args(info);
		auto *w = new ResolveWorker(info.Env(), core_, std::move(q));
		Napi::Promise p = w->Promise();
		w->Queue();
		return p;
	}

	// JS: stats(): { modulesLoaded: number, moduleHits: number, modulesOpen: number }
	Napi::Value Stats(const Napi::CallbackInfo &info)
	{
		Napi::Env env = info.Env();
		std::lock_guard<std::mutex> g(core_->mu);
		Napi::Object o = Napi::Object::New(env);
		o.Set("modulesLoaded", Napi::Number::New(env, static_cast<double>(core_->loads)));
		o.Set("moduleHits", Napi::Number::New(env, static_cast<double>(core_->hits)));
		o.Set("modulesOpen", Napi::Number::New(env, static_cast<double>(core_->lru.size())));
		return o;
	}

	// JS: close(): void — closes every open file; later calls throw.
	Napi::Value Close(const Napi::CallbackInfo &info)
	{
		Release();
		return info.Env().Undefined();
	}

	// closeFiles(): closes every open module file and its libdw tables (a file a worker
	// is using closes when it is done); the symbolizer stays usable and reopens files as
	// addresses need them. Returning the freed pages to the kernel is the caller's
	// (addon.cc's trimMemory), once for everything it let go.
	Napi::Value CloseFiles(const Napi::CallbackInfo &info)
	{
		if (core_) {
			std::vector<std::shared_ptr<ModuleFile>> evicted;
			core_->Clear(&evicted);
		}
		return info.Env().Undefined();
	}

	std::shared_ptr<Core> core_;
};

} // namespace

void InitSymbolize(Napi::Env env, Napi::Object exports)
{
	elf_version(EV_CURRENT);
	// JS: Symbolizer: new (opts) => { resolve, resolveAsync, stats, close }
	exports.Set("Symbolizer", Symbolizer::Define(env));
}
