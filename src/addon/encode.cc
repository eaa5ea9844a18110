// SPDX-License-Identifier: Apache-2.0
//
// encodeSamples: the `sample` records (Profile field 2) of one process's part of a pprof
// heap profile, as protobuf bytes. src/agent/pprof.ts writes the rest (sample types,
// mappings, locations, functions, strings) and calls this for the hot loop: 100k samples
// with twenty location ids each are a few milliseconds here and most of a request's time
// in JavaScript. The values and labels are exactly those of pprof.ts's reference loop
// (and so of src/profile.ts): test/agent/pprof-equivalence.test.ts compares them.
//
// Per counter row i (stack ids[i]):
//   alloc_objects = round(objects(ao - bao))   alloc_space = ab - bab      (at least 0)
//   inuse_objects = round(objects(io))         inuse_space = ib
//   with fullDelta and a base row: inuse_* -= the base's in-use (may become negative)
// where io and ib are the counters' inuseObjects and inuseBytes columns: the reader's one
// rule (src/addon/reader.h), or what the caller puts there (the peak view passes each
// stack's in use at the peak).
// where objects() turns the region's 16.16 fixed point into a number; rows whose four
// values are 0 are left out. Labels: pid, and exe (a string index) when asked; no `bytes`
// label (docs/exporters.md "Labels": a stack's labels never change between profiles, so
// consumers that match samples by stack and labels, as Alloy does, can subtract them). Location ids: the stack's list (copied from the
// packed varints when locBase is 0, else each id + locBase), the overflow or unknown
// location otherwise. Every index taken from the arguments is bounds-checked: a bad one
// makes that row's stack unknown, never a read out of bounds.
#include "encode.h"

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "heaptap_region.h"

namespace {

class Out {
public:
	std::vector<uint8_t> b;

	void Byte(uint8_t v) { b.push_back(v); }
	void Var(uint64_t v)
	{
		while (v >= 0x80) {
			b.push_back(static_cast<uint8_t>(v | 0x80));
			v >>= 7;
		}
		b.push_back(static_cast<uint8_t>(v));
	}
	// int64 as protobuf writes it: a negative is its 64-bit two's complement (ten bytes).
	void SVar(int64_t v) { Var(static_cast<uint64_t>(v)); }
	void Raw(const uint8_t *p, size_t n) { b.insert(b.end(), p, p + n); }
};

size_t VarSize(uint64_t v)
{
	size_t n = 1;
	while (v >= 0x80) {
		v >>= 7;
		n++;
	}
	return n;
}

double Objects(uint64_t fixed)
{
	return static_cast<double>(fixed >> HT_OBJ_SHIFT) +
	       static_cast<double>(fixed & (HT_OBJ_ONE - 1)) / static_cast<double>(HT_OBJ_ONE);
}

// JavaScript's Math.round for the non-negative values here.
uint64_t Round(double v) { return v > 0 ? static_cast<uint64_t>(std::floor(v + 0.5)) : 0; }

uint64_t Sub(uint64_t a, uint64_t b) { return a > b ? a - b : 0; }

template <typename T> struct View {
	const T *p = nullptr;
	size_t n = 0;
};

template <typename T> View<T> Typed(Napi::Env env, Napi::Object o, const char *name, napi_typedarray_type type, bool optional = false)
{
	Napi::Value v = o.Get(name);
	View<T> out;
	if (optional && v.IsUndefined())
		return out;
	if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != type)
		throw Napi::TypeError::New(env, std::string(name) + " has the wrong type");
	Napi::TypedArrayOf<T> a = v.As<Napi::TypedArrayOf<T>>();
	out.p = a.Data();
	out.n = a.ElementLength();
	return out;
}

uint64_t Num(Napi::Env env, Napi::Object o, const char *name)
{
	Napi::Value v = o.Get(name);
	if (!v.IsNumber())
		throw Napi::TypeError::New(env, std::string(name) + " must be a number");
	double d = v.As<Napi::Number>().DoubleValue();
	if (!(d >= 0 && d <= 9007199254740991.0))
		throw Napi::RangeError::New(env, std::string(name) + " out of range");
	return static_cast<uint64_t>(d);
}

struct Counters {
	View<uint32_t> ids;
	View<uint64_t> ao, ab, fo, fb, io, ib;
};

Counters ReadCounters(Napi::Env env, Napi::Object o)
{
	Counters c;
	c.ids = Typed<uint32_t>(env, o, "ids", napi_uint32_array);
	c.ao = Typed<uint64_t>(env, o, "allocObjects", napi_biguint64_array);
	c.ab = Typed<uint64_t>(env, o, "allocBytes", napi_biguint64_array);
	c.fo = Typed<uint64_t>(env, o, "freeObjects", napi_biguint64_array);
	c.fb = Typed<uint64_t>(env, o, "freeBytes", napi_biguint64_array);
	c.io = Typed<uint64_t>(env, o, "inuseObjects", napi_biguint64_array);
	c.ib = Typed<uint64_t>(env, o, "inuseBytes", napi_biguint64_array);
	size_t n = c.ids.n;
	if (c.ao.n != n || c.ab.n != n || c.fo.n != n || c.fb.n != n || c.io.n != n || c.ib.n != n)
		throw Napi::RangeError::New(env, "counter arrays differ in length");
	return c;
}

// Row of each base stack id: open addressing, at most half full.
class RowIndex {
public:
	explicit RowIndex(const View<uint32_t> &ids)
	{
		size_t cap = 16;
		while (cap < ids.n * 2)
			cap <<= 1;
		keys_.assign(cap, 0);
		rows_.assign(cap, -1);
		mask_ = cap - 1;
		for (size_t i = 0; i < ids.n; i++) {
			size_t h = Slot(ids.p[i]);
			if (rows_[h] < 0) {
				keys_[h] = ids.p[i];
				rows_[h] = static_cast<int64_t>(i);
			}
		}
	}
	int64_t Find(uint32_t id) const { return rows_[Slot(id)]; }

private:
	size_t Slot(uint32_t id) const
	{
		size_t h = (static_cast<uint64_t>(id) * 0x9e3779b97f4a7c15ull) >> 40 & mask_;
		while (rows_[h] >= 0 && keys_[h] != id)
			h = (h + 1) & mask_;
		return h;
	}
	std::vector<uint32_t> keys_;
	std::vector<int64_t> rows_;
	size_t mask_ = 0;
};

void Label(Out &o, uint64_t key, uint8_t tag, uint64_t v)
{
	o.Byte(26); // label = 3, length-delimited
	o.Var(2 + VarSize(key) + VarSize(v));
	o.Byte(8); // key = 1
	o.Var(key);
	o.Byte(tag); // num = 3 (24) or str = 2 (16)
	o.Var(v);
}

size_t LabelSize(uint64_t key, uint64_t v)
{
	size_t n = 2 + VarSize(key) + VarSize(v);
	return 1 + VarSize(n) + n;
}

// JS: encodeSamples(o): Uint8Array (see the comment at the top and src/native.ts)
Napi::Value EncodeSamples(const Napi::CallbackInfo &info)
{
	Napi::Env env = info.Env();
	if (info.Length() < 1 || !info[0].IsObject())
		throw Napi::TypeError::New(env, "expected an options object");
	Napi::Object o = info[0].As<Napi::Object>();
	Counters c = ReadCounters(env, o.Get("counters").As<Napi::Object>());
	Napi::Value bv = o.Get("base");
	bool has_base = bv.IsObject();
	Counters b;
	if (has_base)
		b = ReadCounters(env, bv.As<Napi::Object>());
	bool full_delta = o.Get("fullDelta").ToBoolean().Value();
	View<uint8_t> packed = Typed<uint8_t>(env, o, "packed", napi_uint8_array);
	View<uint32_t> packed_start = Typed<uint32_t>(env, o, "packedStart", napi_uint32_array);
	View<uint32_t> packed_len = Typed<uint32_t>(env, o, "packedLen", napi_uint32_array);
	if (packed_start.n != packed_len.n)
		throw Napi::RangeError::New(env, "per-stack arrays differ in length");
	uint64_t loc_base = Num(env, o, "locBase");
	uint64_t overflow_loc = Num(env, o, "overflowLoc");
	uint64_t unknown_loc = Num(env, o, "unknownLoc");
	uint64_t pid_key = Num(env, o, "pidKey");
	uint64_t pid = Num(env, o, "pid");
	bool exe_label = o.Get("exeLabel").ToBoolean().Value();
	uint64_t exe_key = exe_label ? Num(env, o, "exeKey") : 0;
	uint64_t exe_str = exe_label ? Num(env, o, "exeStr") : 0;

	const RowIndex base_rows(b.ids); // empty without a base

	Out out;
	out.b.reserve(c.ids.n * 48 + packed.n * 2 + 64);
	std::vector<uint64_t> locs;   // a stack's location ids, when they need an offset
	const size_t pid_label = LabelSize(pid_key, pid);
	const size_t exe_label_len = exe_label ? LabelSize(exe_key, exe_str) : 0;
	for (size_t i = 0; i < c.ids.n; i++) {
		uint32_t id = c.ids.p[i];
		int64_t bi = has_base ? base_rows.Find(id) : -1;
		uint64_t ao = c.ao.p[i], ab = c.ab.p[i];
		uint64_t bao = bi >= 0 ? b.ao.p[bi] : 0, bab = bi >= 0 ? b.ab.p[bi] : 0;
		int64_t v[4];
		v[0] = static_cast<int64_t>(Round(Objects(Sub(ao, bao))));
		v[1] = static_cast<int64_t>(Sub(ab, bab));
		v[2] = static_cast<int64_t>(Round(Objects(c.io.p[i])));
		v[3] = static_cast<int64_t>(c.ib.p[i]);
		if (full_delta && bi >= 0) {
			v[2] -= static_cast<int64_t>(Round(Objects(b.io.p[bi])));
			v[3] -= static_cast<int64_t>(b.ib.p[bi]);
		}
		if (v[0] == 0 && v[1] == 0 && v[2] == 0 && v[3] == 0)
			continue;

		// Location ids: packed as stored, re-encoded with an offset, or one synthetic id.
		const uint8_t *pk = nullptr;
		size_t pk_len = 0;
		bool offset = false;
		uint64_t single = 0;
		bool one = false;
		if (id == HT_STACK_OVERFLOW) {
			single = overflow_loc;
			one = true;
		} else if (id < packed_len.n && packed_len.p[id] > 0 &&
			   static_cast<uint64_t>(packed_start.p[id]) + packed_len.p[id] <= packed.n) {
			pk = packed.p + packed_start.p[id];
			pk_len = packed_len.p[id];
			if (loc_base != 0) {
				// Decode, then each id + loc_base; a malformed varint ends the list.
				offset = true;
				locs.clear();
				uint64_t v = 0;
				unsigned shift = 0;
				for (size_t k = 0; k < pk_len && shift < 64; k++) {
					v |= static_cast<uint64_t>(pk[k] & 0x7f) << shift;
					if (pk[k] < 0x80) {
						locs.push_back(v + loc_base);
						v = 0;
						shift = 0;
					} else {
						shift += 7;
					}
				}
			}
		} else {
			single = unknown_loc;
			one = true;
		}
		size_t loc_len = pk_len;
		if (offset) {
			loc_len = 0;
			for (uint64_t l : locs)
				loc_len += VarSize(l);
		}
		if (one)
			loc_len = VarSize(single + loc_base);
		size_t val_len = 0;
		for (int64_t x : v)
			val_len += VarSize(static_cast<uint64_t>(x));
		size_t len = 1 + VarSize(loc_len) + loc_len + 1 + VarSize(val_len) + val_len +
			     pid_label + exe_label_len;

		out.Byte(18); // sample = 2
		out.Var(len);
		out.Byte(10); // location_id = 1, packed
		out.Var(loc_len);
		if (one)
			out.Var(single + loc_base);
		else if (offset)
			for (uint64_t l : locs)
				out.Var(l);
		else
			out.Raw(pk, pk_len);
		out.Byte(18); // value = 2, packed
		out.Var(val_len);
		for (int64_t x : v)
			out.SVar(x);
		Label(out, pid_key, 24, pid);
		if (exe_label)
			Label(out, exe_key, 16, exe_str);
	}
	Napi::Uint8Array result = Napi::Uint8Array::New(env, out.b.size());
	if (!out.b.empty())
		std::memcpy(result.Data(), out.b.data(), out.b.size());
	return result;
}

} // namespace

void InitEncode(Napi::Env env, Napi::Object exports)
{
	exports.Set("encodeSamples", Napi::Function::New(env, EncodeSamples, "encodeSamples"));
}
