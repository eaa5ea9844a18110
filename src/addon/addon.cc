// SPDX-License-Identifier: Apache-2.0
//
// heaptap native addon: exposes the region reader (reader.c) to JavaScript. It converts the
// reader's C structures into plain JS objects and typed arrays and throws the reader's
// errors; it has no policy (no unit conversion, no filtering, no caching). src/native.ts is
// the only file that loads it; src/region.ts carries the TypeScript types of what it returns.
//
// Numbers: uint32 fields and values the reader has validated to lie below 2^32 (section
// offsets and sizes, file size) are numbers; every other uint64 is a bigint, since
// timestamps, seeds and hostile values do not fit in 2^53.

#include <napi.h>

#include <libdeflate.h>
#include <malloc.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#include "reader.h"
#include "encode.h"
#include "symbolize.h"

namespace {

// errno names for the errors the reader's system calls give (strerrorname_np is glibc-only).
const char *ErrnoName(int e)
{
	switch (e) {
#define E(x) case x: return #x
	E(ENOENT); E(ENOTDIR); E(EISDIR); E(ELOOP); E(EACCES); E(EPERM); E(EINVAL);
	E(ENAMETOOLONG); E(ESTALE); E(ENOMEM); E(EMFILE); E(ENFILE); E(ENODEV); E(ENXIO);
	E(EIO); E(EROFS); E(EBUSY); E(ETXTBSY); E(EOVERFLOW); E(EAGAIN); E(EINTR); E(ENOLCK);
#undef E
	default: return nullptr;
	}
}

const char *ErrorCode(const htr_error &err)
{
	switch (err.kind) {
	case HTR_E_IO:
		if (const char *name = ErrnoName(err.errnum))
			return name; // "ENOENT", like Node's own fs errors
		return "ERR_HEAPTAP_IO";
	case HTR_E_FORMAT: return "ERR_HEAPTAP_FORMAT";
	case HTR_E_VERSION: return "ERR_HEAPTAP_VERSION";
	case HTR_E_NOT_READY: return "ERR_HEAPTAP_NOT_READY";
	case HTR_E_BUSY: return "ERR_HEAPTAP_BUSY";
	case HTR_E_NOMEM: return "ERR_HEAPTAP_NOMEM";
	case HTR_E_CHANGED: return "ERR_HEAPTAP_CHANGED";
	case HTR_E_LIMIT: return "ERR_HEAPTAP_LIMIT";
	default: return "ERR_HEAPTAP_ARG";
	}
}

// The message always starts with the file path, so a log line says which region.
Napi::Error RegionError(Napi::Env env, const std::string &path, const htr_error &err)
{
	Napi::Error e = Napi::Error::New(env, path + ": " + err.msg);
	e.Set("code", Napi::String::New(env, ErrorCode(err)));
	e.Set("path", Napi::String::New(env, path));
	if (err.errnum != 0)
		e.Set("errno", Napi::Number::New(env, err.errnum));
	if (err.kind == HTR_E_NOT_READY || err.kind == HTR_E_BUSY) {
		// whether a writer still holds the region: false means it will stay this way
		if (err.alive >= 0)
			e.Set("alive", Napi::Boolean::New(env, err.alive != 0));
	}
	return e;
}

Napi::Value Big(Napi::Env env, uint64_t v)
{
	return Napi::BigInt::New(env, v);
}

Napi::Uint32Array U32(Napi::Env env, const uint32_t *src, size_t n)
{
	Napi::Uint32Array a = Napi::Uint32Array::New(env, n);
	if (n)
		std::memcpy(a.Data(), src, n * sizeof(uint32_t));
	return a;
}

Napi::BigUint64Array U64(Napi::Env env, const uint64_t *src, size_t n)
{
	Napi::BigUint64Array a = Napi::BigUint64Array::New(env, n);
	if (n)
		std::memcpy(a.Data(), src, n * sizeof(uint64_t));
	return a;
}

Napi::Object Section(Napi::Env env, const ht_section &s)
{
	// validated: offset + bytes <= file_bytes <= HTR_MAX_FILE_BYTES < 2^53
	Napi::Object o = Napi::Object::New(env);
	o.Set("offset", Napi::Number::New(env, static_cast<double>(s.offset)));
	o.Set("bytes", Napi::Number::New(env, static_cast<double>(s.bytes)));
	o.Set("capacity", Napi::Number::New(env, s.capacity));
	o.Set("entryBytes", Napi::Number::New(env, s.entry_bytes));
	return o;
}

std::string Hex(const uint8_t *p, size_t n)
{
	static const char digits[] = "0123456789abcdef";
	std::string s;
	s.reserve(n * 2);
	for (size_t i = 0; i < n; i++) {
		s.push_back(digits[p[i] >> 4]);
		s.push_back(digits[p[i] & 15]);
	}
	return s;
}

Napi::Object Header(Napi::Env env, const htr_snapshot &s)
{
	const ht_header &h = s.hdr;
	const htr_live &l = s.live;
	htr_strings str;
	htr_header_strings(&h, &str);
	Napi::Object o = Napi::Object::New(env);
	// identity and geometry (validated copy taken at open)
	o.Set("magic", Big(env, h.magic));
	o.Set("version", Napi::Number::New(env, h.version));
	o.Set("headerBytes", Napi::Number::New(env, h.header_bytes));
	o.Set("fileBytes", Napi::Number::New(env, static_cast<double>(h.file_bytes)));
	o.Set("flags", Napi::Number::New(env, h.flags));
	o.Set("arch", Napi::Number::New(env, h.arch));
	o.Set("modules", Section(env, h.modules));
	o.Set("paths", Section(env, h.paths));
	o.Set("stackIndex", Section(env, h.stack_index));
	o.Set("stacks", Section(env, h.stacks));
	o.Set("frames", Section(env, h.frames));
	o.Set("shared", Section(env, h.shared));
	o.Set("slabs", Section(env, h.slabs));
	o.Set("slabEntries", Napi::Number::New(env, h.slab_entries));
	o.Set("maxDepth", Napi::Number::New(env, h.max_depth));
	// the process, written once before RUNNING
	o.Set("pid", Napi::Number::New(env, h.pid));
	o.Set("ppid", Napi::Number::New(env, h.ppid));
	o.Set("startNs", Big(env, h.start_ns));
	o.Set("procStartTicks", Big(env, h.proc_start_ticks));
	o.Set("sampleRate", Big(env, h.sample_rate));
	o.Set("seed", Big(env, h.seed));
	o.Set("unwinder", Napi::Number::New(env, h.unwinder));
	o.Set("exe", Napi::String::New(env, str.exe));
	o.Set("cmdline", Napi::String::New(env, str.cmdline));
	o.Set("service", Napi::String::New(env, str.service));
	// live words, loaded after the counters and stacks of this snapshot
	o.Set("state", Napi::Number::New(env, l.state));
	o.Set("pausedNow", Napi::Number::New(env, l.paused_now));
	o.Set("exitNs", Big(env, l.exit_ns));
	o.Set("heartbeatNs", Big(env, l.heartbeat_ns));
	o.Set("rateNow", Big(env, l.rate_now));
	o.Set("seq", Big(env, l.seq));
	o.Set("stacksUsed", Napi::Number::New(env, l.stacks_used));
	o.Set("modulesUsed", Napi::Number::New(env, l.modules_used));
	o.Set("framesUsed", Big(env, l.frames_used));
	o.Set("pathsUsed", Big(env, l.paths_used));
	o.Set("threadsSeen", Big(env, l.threads_seen));
	o.Set("slabFolds", Big(env, l.slab_folds));
	o.Set("drops", U64(env, l.drops, HT_DROP_SLOTS));
	// layout features (validated copy) and what they add; zeros without the bit
	o.Set("features", Napi::Number::New(env, h.features));
	o.Set("inuseBytes", Napi::BigInt::New(env, static_cast<int64_t>(l.inuse_bytes)));
	o.Set("allocBytes", Big(env, l.alloc_bytes));
	o.Set("peakBytes", Big(env, s.peak.bytes));
	o.Set("peakNs", Big(env, s.peak.ns));
	o.Set("peakGen", Big(env, s.peak.gen));
	o.Set("timelineNext", Big(env, l.timeline_next));
	const ht_section none = {0, 0, 0, 0};
	o.Set("timeline", Section(env, (h.features & HT_FEATURE_TIMELINE) ? h.timeline : none));
	o.Set("sharedPeak", Section(env, (h.features & HT_FEATURE_PEAK) ? h.shared_peak : none));
	return o;
}

Napi::BigInt64Array I64(Napi::Env env, const int64_t *src, size_t n)
{
	Napi::BigInt64Array a = Napi::BigInt64Array::New(env, n);
	if (n)
		std::memcpy(a.Data(), src, n * sizeof(int64_t));
	return a;
}

Napi::Object Snapshot(Napi::Env env, const htr_snapshot &s)
{
	Napi::Object o = Napi::Object::New(env);
	o.Set("header", Header(env, s));

	Napi::Object control = Napi::Object::New(env);
	control.Set("paused", Napi::Number::New(env, s.live.control_paused));
	control.Set("rate", Big(env, s.live.control_rate));
	control.Set("seq", Big(env, s.live.control_seq));
	o.Set("control", control);

	o.Set("alive", Napi::Boolean::New(env, s.alive != 0));

	Napi::Array modules = Napi::Array::New(env, s.module_count);
	for (uint32_t i = 0; i < s.module_count; i++) {
		const htr_module &m = s.modules[i];
		Napi::Object mo = Napi::Object::New(env);
		mo.Set("index", Napi::Number::New(env, m.index));
		mo.Set("state", Napi::Number::New(env, m.state));
		mo.Set("flags", Napi::Number::New(env, m.flags));
		mo.Set("path", Napi::String::New(env, m.path, m.path_len));
		mo.Set("loadBias", Big(env, m.load_bias));
		mo.Set("start", Big(env, m.start));
		mo.Set("limit", Big(env, m.limit));
		mo.Set("fileOffset", Big(env, m.file_offset));
		mo.Set("loadNs", Big(env, m.load_ns));
		mo.Set("unloadNs", Big(env, m.unload_ns));
		mo.Set("buildId", Napi::String::New(env, Hex(m.build_id, m.build_id_len)));
		modules.Set(i, mo);
	}
	o.Set("modules", modules);

	const htr_stacks &st = s.stacks;
	Napi::Object stacks = Napi::Object::New(env);
	stacks.Set("ids", U32(env, st.ids, st.count));
	stacks.Set("depths", U32(env, st.depths, st.count));
	stacks.Set("flags", U32(env, st.flags, st.count));
	stacks.Set("frameStart", U32(env, st.frame_start, st.count));
	stacks.Set("frames", U64(env, st.frames, st.nframes));
	stacks.Set("next", Napi::Number::New(env, st.next_stack));
	o.Set("stacks", stacks);

	const htr_counters &c = s.counters;
	Napi::Object counters = Napi::Object::New(env);
	counters.Set("ids", U32(env, c.ids, c.count));
	counters.Set("allocObjects", U64(env, c.alloc_objects, c.count));
	counters.Set("allocBytes", U64(env, c.alloc_bytes, c.count));
	counters.Set("freeObjects", U64(env, c.free_objects, c.count));
	counters.Set("freeBytes", U64(env, c.free_bytes, c.count));
	counters.Set("samples", U64(env, c.samples, c.count));
	counters.Set("inuseObjects", U64(env, c.inuse_objects, c.count));
	counters.Set("inuseBytes", U64(env, c.inuse_bytes, c.count));
	counters.Set("peakObjects", U64(env, c.peak_objects, c.count));
	counters.Set("peakBytes", U64(env, c.peak_bytes, c.count));
	o.Set("counters", counters);
	o.Set("inuseBytes", Big(env, s.inuse_bytes));
	o.Set("inuseObjects", Big(env, s.inuse_objects));

	if (s.hdr.features & HT_FEATURE_PEAK) {
		Napi::Object peak = Napi::Object::New(env);
		peak.Set("bytes", Big(env, s.peak.bytes));
		peak.Set("ns", Big(env, s.peak.ns));
		peak.Set("gen", Big(env, s.peak.gen));
		peak.Set("settled", Napi::Boolean::New(env, s.peak.settled != 0));
		peak.Set("stackBytes", Big(env, s.peak_stack_bytes));
		o.Set("peak", peak);
	} else {
		o.Set("peak", env.Null());
	}

	const htr_timeline &tl = s.timeline;
	Napi::Object timeline = Napi::Object::New(env);
	timeline.Set("index", U64(env, tl.index, tl.count));
	timeline.Set("ns", U64(env, tl.ns, tl.count));
	timeline.Set("inuseBytes", I64(env, tl.inuse_bytes, tl.count));
	timeline.Set("allocBytes", U64(env, tl.alloc_bytes, tl.count));
	timeline.Set("rssBytes", U64(env, tl.rss_bytes, tl.count));
	timeline.Set("next", Big(env, tl.next));
	o.Set("timeline", timeline);

	o.Set("retries", Napi::Number::New(env, s.retries));
	o.Set("malformed", Napi::Number::New(env, static_cast<double>(s.malformed)));
	o.Set("firstMalformed", Napi::String::New(env, s.first_malformed));
	return o;
}

std::string PathArg(const Napi::CallbackInfo &info)
{
	if (info.Length() < 1 || !info[0].IsString())
		throw Napi::TypeError::New(info.Env(), "path must be a string");
	std::string path = info[0].As<Napi::String>().Utf8Value();
	if (path.empty() || path.find('\0') != std::string::npos)
		throw Napi::TypeError::New(info.Env(), "path must be a non-empty string without NUL");
	return path;
}

uint32_t SinceArg(const Napi::CallbackInfo &info)
{
	if (info.Length() < 2 || info[1].IsUndefined())
		return 0;
	if (!info[1].IsNumber())
		throw Napi::TypeError::New(info.Env(), "sinceStack must be a number");
	double d = info[1].As<Napi::Number>().DoubleValue();
	if (!(d >= 0 && d <= 4294967295.0) || d != static_cast<double>(static_cast<uint32_t>(d)))
		throw Napi::RangeError::New(info.Env(), "sinceStack must be an integer in [0, 2^32)");
	return static_cast<uint32_t>(d);
}

uint64_t SincePointArg(const Napi::CallbackInfo &info)
{
	if (info.Length() < 3 || info[2].IsUndefined())
		return 0;
	if (info[2].IsBigInt()) {
		bool lossless = false;
		uint64_t v = info[2].As<Napi::BigInt>().Uint64Value(&lossless);
		if (!lossless)
			throw Napi::RangeError::New(info.Env(), "sincePoint must fit in 64 bits unsigned");
		return v;
	}
	if (!info[2].IsNumber())
		throw Napi::TypeError::New(info.Env(), "sincePoint must be a number or a bigint");
	double d = info[2].As<Napi::Number>().DoubleValue();
	if (!(d >= 0 && d <= 9007199254740991.0) || d != static_cast<double>(static_cast<uint64_t>(d)))
		throw Napi::RangeError::New(info.Env(), "sincePoint must be a non-negative integer");
	return static_cast<uint64_t>(d);
}

// JS: readRegion(path: string, sinceStack?: number, sincePoint?: number | bigint): RegionSnapshot
// Opens, validates and snapshots the region at path, then unmaps it. Throws an Error whose
// message starts with the path and whose code is ERR_HEAPTAP_* (or an errno name).
Napi::Value ReadRegion(const Napi::CallbackInfo &info)
{
	Napi::Env env = info.Env();
	std::string path = PathArg(info);
	uint32_t since = SinceArg(info);
	uint64_t since_point = SincePointArg(info);
	htr_snapshot s;
	htr_error err;
	if (htr_read_path2(path.c_str(), since, since_point, &s, &err) != 0)
		throw RegionError(env, path, err);
	Napi::Object o;
	try {
		o = Snapshot(env, s);
	} catch (...) {
		htr_snapshot_free(&s);
		throw;
	}
	htr_snapshot_free(&s);
	return o;
}

class ReadWorker : public Napi::AsyncWorker {
public:
	ReadWorker(Napi::Env env, std::string path, uint32_t since, uint64_t since_point)
		: Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)),
		  path_(std::move(path)), since_(since), since_point_(since_point)
	{
		std::memset(&snap_, 0, sizeof snap_);
		std::memset(&err_, 0, sizeof err_);
	}
	~ReadWorker() override { htr_snapshot_free(&snap_); }

	Napi::Promise Promise() const { return deferred_.Promise(); }

	void Execute() override
	{
		rc_ = htr_read_path2(path_.c_str(), since_, since_point_, &snap_, &err_);
	}

	void OnOK() override
	{
		Napi::Env env = Env();
		Napi::HandleScope scope(env);
		if (rc_ != 0) {
			deferred_.Reject(RegionError(env, path_, err_).Value());
			return;
		}
		try {
			deferred_.Resolve(Snapshot(env, snap_));
		} catch (const Napi::Error &e) {
			deferred_.Reject(e.Value());
		}
	}

private:
	Napi::Promise::Deferred deferred_;
	std::string path_;
	uint32_t since_;
	uint64_t since_point_;
	int rc_ = -1;
	htr_snapshot snap_;
	htr_error err_;
};

// JS: readRegionAsync(path: string, sinceStack?: number, sincePoint?: number | bigint): Promise<RegionSnapshot>
// The same as readRegion, on the libuv thread pool (the snapshot may sleep between
// retries while a slab fold is under way).
Napi::Value ReadRegionAsync(const Napi::CallbackInfo &info)
{
	std::string path = PathArg(info);
	uint32_t since = SinceArg(info);
	uint64_t since_point = SincePointArg(info);
	ReadWorker *w = new ReadWorker(info.Env(), std::move(path), since, since_point);
	Napi::Promise p = w->Promise();
	w->Queue();
	return p;
}

// JS: writeControl(path: string, control: { paused?: boolean, rate?: number | bigint }): void
// Stores the given fields into the region's control area and bumps control.seq. rate 0
// asks the preload to keep its current rate.
Napi::Value WriteControl(const Napi::CallbackInfo &info)
{
	Napi::Env env = info.Env();
	std::string path = PathArg(info);
	if (info.Length() < 2 || !info[1].IsObject())
		throw Napi::TypeError::New(env, "control must be an object");
	Napi::Object c = info[1].As<Napi::Object>();
	int set_paused = 0, set_rate = 0;
	uint32_t paused = 0;
	uint64_t rate = 0;
	Napi::Value p = c.Get("paused");
	if (!p.IsUndefined()) {
		if (!p.IsBoolean())
			throw Napi::TypeError::New(env, "control.paused must be a boolean");
		set_paused = 1;
		paused = p.As<Napi::Boolean>().Value() ? 1 : 0;
	}
	Napi::Value r = c.Get("rate");
	if (!r.IsUndefined()) {
		set_rate = 1;
		if (r.IsBigInt()) {
			bool lossless = false;
			rate = r.As<Napi::BigInt>().Uint64Value(&lossless);
			if (!lossless)
				throw Napi::RangeError::New(env, "control.rate must fit in 64 bits");
		} else if (r.IsNumber()) {
			double d = r.As<Napi::Number>().DoubleValue();
			if (!(d >= 0 && d <= 9007199254740991.0) ||
			    d != static_cast<double>(static_cast<uint64_t>(d)))
				throw Napi::RangeError::New(env, "control.rate must be a non-negative integer");
			rate = static_cast<uint64_t>(d);
		} else {
			throw Napi::TypeError::New(env, "control.rate must be a number or a bigint");
		}
	}
	htr_error err;
	if (htr_write_control(path.c_str(), set_paused, paused, set_rate, rate, &err) != 0)
		throw RegionError(env, path, err);
	return env.Undefined();
}

Napi::Array Names(Napi::Env env, const char *(*name)(unsigned))
{
	Napi::Array a = Napi::Array::New(env);
	for (unsigned i = 0; name(i) != nullptr; i++)
		a.Set(i, Napi::String::New(env, name(i)));
	return a;
}

// Offsets and sizes of the layout as this compiler sees the header, so that tests (and any
// JS code that must write a region) can check their own idea of it.
Napi::Object Layout(Napi::Env env)
{
	Napi::Object o = Napi::Object::New(env);
	Napi::Object sizes = Napi::Object::New(env);
	sizes.Set("header", Napi::Number::New(env, sizeof(ht_header)));
	sizes.Set("control", Napi::Number::New(env, sizeof(ht_control)));
	sizes.Set("section", Napi::Number::New(env, sizeof(ht_section)));
	sizes.Set("module", Napi::Number::New(env, sizeof(ht_module)));
	sizes.Set("stack", Napi::Number::New(env, sizeof(ht_stack)));
	sizes.Set("counters", Napi::Number::New(env, sizeof(ht_counters)));
	sizes.Set("slabHeader", Napi::Number::New(env, sizeof(ht_slab_header)));
	sizes.Set("slabEntry", Napi::Number::New(env, sizeof(ht_slab_entry)));
	sizes.Set("peak", Napi::Number::New(env, sizeof(ht_peak)));
	sizes.Set("timelinePoint", Napi::Number::New(env, sizeof(ht_timeline_point)));
	o.Set("sizes", sizes);

	Napi::Object hdr = Napi::Object::New(env);
#define OFF(js, field) hdr.Set(js, Napi::Number::New(env, offsetof(ht_header, field)))
	OFF("magic", magic);
	OFF("version", version);
	OFF("headerBytes", header_bytes);
	OFF("fileBytes", file_bytes);
	OFF("flags", flags);
	OFF("arch", arch);
	OFF("modules", modules);
	OFF("paths", paths);
	OFF("stackIndex", stack_index);
	OFF("stacks", stacks);
	OFF("frames", frames);
	OFF("shared", shared);
	OFF("slabs", slabs);
	OFF("slabEntries", slab_entries);
	OFF("maxDepth", max_depth);
	OFF("pid", pid);
	OFF("ppid", ppid);
	OFF("startNs", start_ns);
	OFF("procStartTicks", proc_start_ticks);
	OFF("sampleRate", sample_rate);
	OFF("seed", seed);
	OFF("unwinder", unwinder);
	OFF("exe", exe);
	OFF("cmdline", cmdline);
	OFF("service", service);
	OFF("state", state);
	OFF("pausedNow", paused_now);
	OFF("exitNs", exit_ns);
	OFF("heartbeatNs", heartbeat_ns);
	OFF("rateNow", rate_now);
	OFF("seq", seq);
	OFF("stacksUsed", stacks_used);
	OFF("modulesUsed", modules_used);
	OFF("framesUsed", frames_used);
	OFF("pathsUsed", paths_used);
	OFF("threadsSeen", threads_seen);
	OFF("slabFolds", slab_folds);
	OFF("drops", drops);
	OFF("slabsUsed", slabs_used);
	OFF("features", features);
	OFF("inuseBytes", inuse_bytes);
	OFF("allocBytes", alloc_bytes);
	OFF("peakBytes", peak_bytes);
	OFF("peakNs", peak_ns);
	OFF("peakGen", peak_gen);
	OFF("timeline", timeline);
	OFF("timelineNext", timeline_next);
	OFF("sharedPeak", shared_peak);
#undef OFF
	o.Set("header", hdr);

	Napi::Object mod = Napi::Object::New(env);
#define OFF(js, field) mod.Set(js, Napi::Number::New(env, offsetof(ht_module, field)))
	OFF("state", state);
	OFF("flags", flags);
	OFF("pathOff", path_off);
	OFF("pathLen", path_len);
	OFF("loadBias", load_bias);
	OFF("start", start);
	OFF("limit", limit);
	OFF("fileOffset", file_offset);
	OFF("loadNs", load_ns);
	OFF("unloadNs", unload_ns);
	OFF("buildIdLen", build_id_len);
	OFF("buildId", build_id);
#undef OFF
	o.Set("module", mod);

	Napi::Object ctl = Napi::Object::New(env);
	ctl.Set("paused", Napi::Number::New(env, offsetof(ht_control, paused)));
	ctl.Set("rate", Napi::Number::New(env, offsetof(ht_control, rate)));
	ctl.Set("seq", Napi::Number::New(env, offsetof(ht_control, seq)));
	o.Set("control", ctl);
	return o;
}

Napi::Object Constants(Napi::Env env)
{
	Napi::Object o = Napi::Object::New(env);
	o.Set("LAYOUT_VERSION", Napi::Number::New(env, HT_LAYOUT_VERSION));
	o.Set("MAGIC", Big(env, HT_MAGIC));
	o.Set("HEADER_BYTES", Napi::Number::New(env, HT_HEADER_BYTES));
	o.Set("CONTROL_OFFSET", Napi::Number::New(env, HT_CONTROL_OFFSET));
	o.Set("SECTION_ALIGN", Napi::Number::New(env, HT_SECTION_ALIGN));
	o.Set("REGION_SUFFIX", Napi::String::New(env, HT_REGION_SUFFIX));
	o.Set("OBJ_SHIFT", Napi::Number::New(env, HT_OBJ_SHIFT));
	o.Set("OBJ_ONE", Napi::Number::New(env, static_cast<double>(HT_OBJ_ONE)));
	o.Set("STACK_NONE", Napi::Number::New(env, HT_STACK_NONE));
	o.Set("STACK_OVERFLOW", Napi::Number::New(env, HT_STACK_OVERFLOW));
	o.Set("STACK_FIRST", Napi::Number::New(env, HT_STACK_FIRST));
	o.Set("STACK_READY", Napi::Number::New(env, HT_STACK_READY));
	o.Set("STACK_TRUNCATED", Napi::Number::New(env, HT_STACK_TRUNCATED));
	o.Set("STACK_DUPLICATE", Napi::Number::New(env, HT_STACK_DUPLICATE));
	o.Set("STACK_SYNTHETIC", Napi::Number::New(env, HT_STACK_SYNTHETIC));
	o.Set("FLAG_EXACT", Napi::Number::New(env, HT_FLAG_EXACT));
	o.Set("FLAG_FORK_CHILD", Napi::Number::New(env, HT_FLAG_FORK_CHILD));
	o.Set("FEATURE_PEAK", Napi::Number::New(env, HT_FEATURE_PEAK));
	o.Set("FEATURE_TIMELINE", Napi::Number::New(env, HT_FEATURE_TIMELINE));
	o.Set("PEAK_ATTEMPTS", Napi::Number::New(env, HTR_PEAK_ATTEMPTS));
	o.Set("MODULE_MAIN", Napi::Number::New(env, HT_MODULE_MAIN));
	o.Set("MODULE_VDSO", Napi::Number::New(env, HT_MODULE_VDSO));
	o.Set("MODULE_SELF", Napi::Number::New(env, HT_MODULE_SELF));
	o.Set("DROP_COUNT", Napi::Number::New(env, HT_DROP_COUNT));
	o.Set("DROP_SLOTS", Napi::Number::New(env, HT_DROP_SLOTS));
	o.Set("MAX_FILE_BYTES", Napi::Number::New(env, static_cast<double>(HTR_MAX_FILE_BYTES)));
	o.Set("MAX_DEPTH", Napi::Number::New(env, HTR_MAX_DEPTH));
	o.Set("MAX_ATTEMPTS", Napi::Number::New(env, HTR_MAX_ATTEMPTS));
	o.Set("HOST_ARCH", Napi::Number::New(env, htr_host_arch()));
	// index i names HT_DROP_* i, HT_STATE_* i, HT_MODULE_* i, HT_UNWIND_* i
	o.Set("dropReasons", Names(env, htr_drop_name));
	o.Set("stateNames", Names(env, htr_state_name));
	o.Set("moduleStateNames", Names(env, htr_module_state_name));
	o.Set("unwinderNames", Names(env, htr_unwinder_name));
	return o;
}

// JS: dedupeFrames(frames: BigUint64Array): { unique: BigUint64Array, index: Uint32Array }
// The distinct values of `frames` in order of first appearance, and for each frame the
// position of its value in `unique`. The agent symbolizes each return address once; a
// region of 100k stacks has over a million frames but only thousands of distinct ones,
// and this pass is what keeps their lookup off the JavaScript heap (about 10 ns a frame).
Napi::Value DedupeFrames(const Napi::CallbackInfo &info)
{
	Napi::Env env = info.Env();
	if (info.Length() < 1 || !info[0].IsTypedArray() ||
	    info[0].As<Napi::TypedArray>().TypedArrayType() != napi_biguint64_array)
		throw Napi::TypeError::New(env, "frames must be a BigUint64Array");
	Napi::TypedArrayOf<uint64_t> in = info[0].As<Napi::TypedArrayOf<uint64_t>>();
	size_t n = in.ElementLength();
	if (n > UINT32_MAX)
		throw Napi::RangeError::New(env, "too many frames");
	const uint64_t *f = in.Data();
	Napi::TypedArrayOf<uint32_t> index = Napi::TypedArrayOf<uint32_t>::New(env, n);
	uint32_t *idx = index.Data();
	// Open addressing at most half full: slot value is position + 1, 0 = empty.
	size_t cap = 64;
	std::vector<uint32_t> slots(cap, 0);
	std::vector<uint64_t> uniq;
	for (size_t k = 0; k < n; k++) {
		uint64_t v = f[k];
		size_t mask = cap - 1;
		size_t h = (size_t)((v * 0x9e3779b97f4a7c15ull) >> 32) & mask;
		uint32_t at;
		while ((at = slots[h]) != 0 && uniq[at - 1] != v)
			h = (h + 1) & mask;
		if (at == 0) {
			uniq.push_back(v);
			at = (uint32_t)uniq.size();
			slots[h] = at;
			if (uniq.size() * 2 > cap) {
				cap *= 2;
				std::vector<uint32_t> grown(cap, 0);
				for (uint32_t i = 0; i < uniq.size(); i++) {
					size_t g = (size_t)((uniq[i] * 0x9e3779b97f4a7c15ull) >> 32) & (cap - 1);
					while (grown[g] != 0)
						g = (g + 1) & (cap - 1);
					grown[g] = i + 1;
				}
				slots.swap(grown);
			}
		}
		idx[k] = at - 1;
	}
	Napi::TypedArrayOf<uint64_t> unique = Napi::TypedArrayOf<uint64_t>::New(env, uniq.size(), napi_biguint64_array);
	if (!uniq.empty())
		memcpy(unique.Data(), uniq.data(), uniq.size() * sizeof(uint64_t));
	Napi::Object out = Napi::Object::New(env);
	out.Set("unique", unique);
	out.Set("index", index);
	return out;
}

// JS: trimMemory(): void
// Gives the C heap's free pages back to the kernel (glibc's malloc_trim over every arena).
// libdw's tables for a module are large and freed all at once; the libuv threads that
// symbolize each allocate from their own arena, which otherwise keeps those pages.
Napi::Value TrimMemory(const Napi::CallbackInfo &info)
{
	malloc_trim(0);
	return info.Env().Undefined();
}

// JS: hasFileCapabilities(path: string): boolean
// Whether the file carries file capabilities (the security.capability extended attribute
// that setcap writes). The dynamic loader runs such a program, like a setuid one, in
// secure mode when a user who is not root starts it, and then ignores LD_PRELOAD.
// Node has no getxattr; a file that cannot be read or has no such attribute is false.
Napi::Value HasFileCapabilities(const Napi::CallbackInfo &info)
{
	Napi::Env env = info.Env();
	if (info.Length() < 1 || !info[0].IsString()) {
		Napi::TypeError::New(env, "hasFileCapabilities(path: string)").ThrowAsJavaScriptException();
		return env.Undefined();
	}
	std::string path = info[0].As<Napi::String>().Utf8Value();
	return Napi::Boolean::New(env, getxattr(path.c_str(), "security.capability", nullptr, 0) > 0);
}

// JS: lockFile(path: string): number
// Opens (creating, mode 0644) the file and takes flock(LOCK_EX | LOCK_NB) on it: the open
// descriptor (>= 0) while the lock is ours, -1 when another open file holds it. The lock
// lasts until unlockFile(fd) or the process ends, however it ends: the kernel releases it,
// so a killed holder never leaves a stale lock. Other errors throw. (The agent's push lease:
// src/exporters/lease.ts. Node has no flock.)
Napi::Value LockFile(const Napi::CallbackInfo &info)
{
	Napi::Env env = info.Env();
	if (info.Length() < 1 || !info[0].IsString()) {
		Napi::TypeError::New(env, "lockFile(path: string)").ThrowAsJavaScriptException();
		return env.Undefined();
	}
	std::string path = info[0].As<Napi::String>().Utf8Value();
	int fd = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
	if (fd < 0) {
		int err = errno;
		Napi::Error::New(env, "open " + path + ": " + strerror(err)).ThrowAsJavaScriptException();
		return env.Undefined();
	}
	if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
		int err = errno;
		close(fd);
		if (err == EWOULDBLOCK)
			return Napi::Number::New(env, -1);
		Napi::Error::New(env, "flock " + path + ": " + strerror(err)).ThrowAsJavaScriptException();
		return env.Undefined();
	}
	return Napi::Number::New(env, fd);
}

// JS: unlockFile(fd: number): void
// Closes a descriptor lockFile returned, which releases its lock.
Napi::Value UnlockFile(const Napi::CallbackInfo &info)
{
	Napi::Env env = info.Env();
	if (info.Length() < 1 || !info[0].IsNumber()) {
		Napi::TypeError::New(env, "unlockFile(fd: number)").ThrowAsJavaScriptException();
		return env.Undefined();
	}
	int fd = info[0].As<Napi::Number>().Int32Value();
	if (fd >= 0)
		close(fd);
	return env.Undefined();
}

// JS: gzipAsync(data: Uint8Array, level: number): Promise<Buffer>
// gzip (RFC 1952) of data with libdeflate at `level` (1..12), on the libuv thread pool.
// libdeflate compresses a whole buffer at once and at level 1 takes half of zlib's time
// on a profile (bench/RESULTS.md); profiles are whole buffers, so streaming buys nothing.
// The caller must not change `data` until the promise settles (a reference keeps it alive).
class GzipWorker : public Napi::AsyncWorker {
public:
	GzipWorker(Napi::Env env, Napi::Uint8Array data, int level)
		: Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)),
		  ref_(Napi::Persistent(data.As<Napi::Object>())), in_(data.Data()),
		  len_(data.ByteLength()), level_(level)
	{
	}
	~GzipWorker() override { free(out_); }

	Napi::Promise Promise() const { return deferred_.Promise(); }

	void Execute() override
	{
		struct libdeflate_compressor *c = libdeflate_alloc_compressor(level_);
		if (!c) {
			SetError("out of memory for the compressor");
			return;
		}
		size_t cap = libdeflate_gzip_compress_bound(c, len_);
		out_ = static_cast<uint8_t *>(malloc(cap ? cap : 1));
		if (!out_) {
			libdeflate_free_compressor(c);
			SetError("out of memory for the compressed profile");
			return;
		}
		outlen_ = libdeflate_gzip_compress(c, in_, len_, out_, cap);
		libdeflate_free_compressor(c);
		if (outlen_ == 0)
			SetError("gzip: output larger than its bound");
	}

	void OnOK() override
	{
		Napi::Env env = Env();
		uint8_t *out = out_;
		out_ = nullptr;
		deferred_.Resolve(Napi::Buffer<uint8_t>::New(env, out, outlen_,
			[](Napi::Env, uint8_t *p) { free(p); }));
	}

	void OnError(const Napi::Error &e) override { deferred_.Reject(e.Value()); }

private:
	Napi::Promise::Deferred deferred_;
	Napi::ObjectReference ref_;
	const uint8_t *in_;
	size_t len_;
	int level_;
	uint8_t *out_ = nullptr;
	size_t outlen_ = 0;
};

Napi::Value GzipAsync(const Napi::CallbackInfo &info)
{
	Napi::Env env = info.Env();
	if (info.Length() < 1 || !info[0].IsTypedArray() ||
	    info[0].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array)
		throw Napi::TypeError::New(env, "data must be a Uint8Array");
	int level = 1;
	if (info.Length() >= 2 && !info[1].IsUndefined()) {
		if (!info[1].IsNumber())
			throw Napi::TypeError::New(env, "level must be a number");
		level = info[1].As<Napi::Number>().Int32Value();
		if (level < 1 || level > 12)
			throw Napi::RangeError::New(env, "level must be 1..12");
	}
	GzipWorker *w = new GzipWorker(env, info[0].As<Napi::Uint8Array>(), level);
	Napi::Promise p = w->Promise();
	w->Queue();
	return p;
}

Napi::Object Init(Napi::Env env, Napi::Object exports)
{
	exports.Set("readRegion", Napi::Function::New(env, ReadRegion, "readRegion"));
	exports.Set("readRegionAsync", Napi::Function::New(env, ReadRegionAsync, "readRegionAsync"));
	exports.Set("writeControl", Napi::Function::New(env, WriteControl, "writeControl"));
	exports.Set("dedupeFrames", Napi::Function::New(env, DedupeFrames, "dedupeFrames"));
	exports.Set("trimMemory", Napi::Function::New(env, TrimMemory, "trimMemory"));
	exports.Set("hasFileCapabilities", Napi::Function::New(env, HasFileCapabilities, "hasFileCapabilities"));
	exports.Set("gzipAsync", Napi::Function::New(env, GzipAsync, "gzipAsync"));
	exports.Set("lockFile", Napi::Function::New(env, LockFile, "lockFile"));
	exports.Set("unlockFile", Napi::Function::New(env, UnlockFile, "unlockFile"));
	// JS: constants: RegionConstants (frozen)
	Napi::Object constants = Constants(env);
	constants.Freeze();
	exports.Set("constants", constants);
	// JS: layout: RegionLayout (offsets and sizes from the C header)
	exports.Set("layout", Layout(env));
	// JS: Symbolizer (symbolize.cc)
	InitSymbolize(env, exports);
	// JS: encodeSamples (encode.cc)
	InitEncode(env, exports);
	return exports;
}

} // namespace

NODE_API_MODULE(heaptap, Init)
