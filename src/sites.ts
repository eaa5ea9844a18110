// Allocation sites: which frame of a stack "allocated", and what to call it.
//
// The innermost frames of a sampled stack are usually plumbing that only passes an
// allocation on: malloc and its glibc aliases, operator new, the C++ standard library
// (std::vector<…>::_M_realloc_insert, std::map<…>::operator[], std::allocator_traits…),
// Rust's alloc/core/std/hashbrown, and the allocator wrappers of runtimes (Perl_safesysmalloc,
// sqlite3Malloc, PyObject_Malloc, g_malloc...). The site is the first frame past them, as
// pprof's allocRx does for tcmalloc heap profiles, so that a C++ cache shows as
// `SessionCache::remember`, not as a std:: frame.
//
// ONE list (PLUMBING below), used by every output: `heaptap run`'s summary, top and diff
// (src/cli/top.ts), ?debug=1 (src/agent/text.ts), the agent's top sites and the
// heaptap_site_inuse_bytes labels (src/agent/source.ts, metrics.ts), the HTML report, and
// bench/accuracy-read.ts for every profiler it compares.
//
// Names: a profile keeps each function's full demangled name; what people read is the
// short form (shortName): template and generic arguments elided (`std::vector<…>::push_back`),
// parameter lists and trailing qualifiers dropped. Rust names arrive demangled by the addon
// (legacy hashes already dropped, as rustfilt prints them).
import { basename } from 'node:path';
import type { Profile, Sample } from 'pprof-format';

/** One frame of a stack, innermost first; inlined functions are frames of their own. */
export interface StackFrame {
  /** the function's full (demangled) name, '' when unknown */
  name: string;
  /** basename of the module (executable or library) it is in, when known */
  module?: string;
  /** source file and line, when known (line 0 = unknown) */
  file?: string;
  line?: number;
  /** offset in the module's file, for frames without a name */
  offset?: bigint;
}

/** The site of one stack. */
export interface Site {
  /** index of the site's frame in the stack given (innermost = 0); -1 for an empty stack */
  index: number;
  /** short display name: `SessionCache::remember`, `std::vector<…>::push_back` */
  short: string;
  /** the full name as the profile holds it (or `module+0xoffset` for an unnamed frame) */
  full: string;
}

// Matched against the short name (no parameters, template arguments elided as <…>).
const PLUMBING = new RegExp(
  '^(' +
    [
      // C and its allocator: glibc's exported names and internal aliases (__libc_malloc,
      // __GI___libc_malloc, __GI___strdup...), and malloc.c's own internals
      '(__GI_)?(__)?(libc_)?(malloc|calloc|realloc|free|valloc|pvalloc|memalign|posix_memalign|aligned_alloc|reallocarray)',
      '(__GI_)?(__)?(strn?dup|wcsn?dup)',
      '_int_(malloc|realloc|memalign|free)|_mid_memalign|sysmalloc|tcache_init|malloc_hook_ini',
      // C++: operator new/delete (every overload), and everything of the standard library
      // (libstdc++ and libc++: std::, std::__1::, std::__cxx11::, __gnu_cxx::): containers'
      // members, allocators, allocator_traits, _Hashtable_alloc, _Rb_tree::_M_create_node...
      'operator (new|delete)(\\[\\])?',
      '(std|__gnu_cxx|__cxxabiv1)::.*',
      // Rust: __rust_alloc and the default allocator (__rdl_*, __rg_*), and the standard
      // crates (alloc::raw_vec, alloc::vec, alloc::string, std::collections, hashbrown::raw)
      '__rust_(alloc|alloc_zeroed|realloc|dealloc)|__rd?[lg]_(alloc|alloc_zeroed|realloc|dealloc)',
      '(alloc|core|hashbrown)::.*',
      // wrappers that only pass a size on: libiberty's (gcc, binutils), redis's zmalloc.c,
      // Perl's, sqlite's, CPython's raw and object allocators (with PYTHONMALLOC=malloc every
      // object goes through them) and GC allocation, GLib's
      'x(malloc|calloc|realloc|strn?dup|memdup)',
      'z(try)?(malloc|calloc|realloc|strdup)(_[a-z_]+)?',
      'Perl_safesys(malloc|calloc|realloc|free)',
      'sqlite3(Mem(Malloc|Realloc)|Malloc(Zero)?|Realloc|DbMallocRaw(NN)?|DbMallocZero|DbRealloc|DbReallocOrFree|DbStrN?Dup)',
      'sqlite3_(malloc|realloc)(64)?|dbMallocRawFinish|dbReallocFinish|mallocWithAlarm',
      '_?Py(Mem|Object)_(Raw)?(Malloc|Calloc|Realloc|Strdup)',
      '_PyMem_\\w+|_PyObject_GC_(New|NewVar|Malloc|Calloc|Link|Alloc|Resize)|gc_alloc|pymalloc_(alloc|realloc)',
      'g_(try_)?(malloc0?|realloc|strdup|strndup|memdup2?)(_n)?',
      'g_slice_(alloc0?|copy|alloc_chain)',
    ].join('|') +
    ')$',
);

const STD_CRATE = /^(alloc|core|std|hashbrown)::/;

/** Whether a Rust qualified path `<Type as Trait>::method` or `<Type>::method` (short form)
 * is the standard crates': its type is theirs, or it is a primitive or a generic parameter
 * (`<[u8]>::to_vec`, `<T as alloc::slice::…::ConvertVec>::to_vec`: no one else can have
 * methods on those) under one of their traits or none. */
function stdQualifiedPath(s: string): boolean {
  if (!s.startsWith('<')) return false;
  const end = matching(s, 0, '<', '>');
  if (!s.startsWith('>::', end)) return false;
  const inner = s.slice(1, end);
  const as = topLevelAs(inner);
  const type = (as < 0 ? inner : inner.slice(0, as)).replace(/^&(mut )?/, '').replace(/^\[|\]$/g, '');
  const trait = as < 0 ? '' : inner.slice(as + 4);
  if (STD_CRATE.test(type)) return true;
  return !type.includes('::') && (trait === '' || STD_CRATE.test(trait) || trait.startsWith('<'));
}

/** The position of " as " outside brackets, or -1. */
function topLevelAs(s: string): number {
  let depth = 0;
  for (let k = 0; k < s.length; k++) {
    const c = s[k]!;
    if (c === '<' || c === '(' || c === '[') depth++;
    else if ((c === '>' && s[k - 1] !== '-') || c === ')' || c === ']') depth--;
    else if (depth === 0 && s.startsWith(' as ', k)) return k;
  }
  return -1;
}

/** Modules that are a profiler's or an allocator's own. */
const PLUMBING_MODULE = /^lib(heaptap|jemalloc|tcmalloc|heaptrack_preload)[^/]*\.so/;

/** Whether a frame only passes an allocation on (the full or the short name). */
export function isAllocatorFrame(name: string, module?: string): boolean {
  if (module && PLUMBING_MODULE.test(basename(module))) return true;
  const s = shortName(name);
  return PLUMBING.test(s) || stdQualifiedPath(s);
}

const UNNAMED = /^(?:(\S+)[ +])?0x[0-9a-f]+$/;

function asFrame(f: StackFrame | string): StackFrame {
  if (typeof f !== 'string') return f;
  const m = UNNAMED.exec(f);
  return m ? { name: '', module: m[1] } : { name: f };
}

/** What a frame is called: its full name, else `module+0xoffset`. */
export function frameName(f: StackFrame | string): string {
  if (typeof f === 'string') return f;
  if (f.name) return f.name;
  const off = f.offset !== undefined ? `0x${f.offset.toString(16)}` : '0x?';
  return f.module ? `${f.module}+${off}` : off;
}

/**
 * The site of a stack given innermost first: the first frame that is not plumbing.
 *
 * A frame without a name (a static function of a stripped library: Debian's libsqlite3
 * keeps only its exported symbols, so sqlite3Malloc shows as an address) is passed over
 * when a named frame of the same module, further out, is not plumbing (sqlite3_step, not
 * libsqlite3.so.0+0x1d503); in a module with no such frame (a stripped executable) the
 * unnamed frame is the site. A stack of nothing but plumbing is sited at its innermost
 * frame. Frames may be given as names (unnamed ones as "module+0x…" or "module 0x…").
 */
export function siteOf(stack: readonly (StackFrame | string)[]): Site {
  if (stack.length === 0) return { index: -1, short: '?', full: '?' };
  const frames = stack.map(asFrame);
  let pick = -1;
  for (let i = 0; i < frames.length; i++) {
    const f = frames[i]!;
    if (isAllocatorFrame(f.name, f.module)) continue;
    if (!f.name) {
      const j = frames.findIndex((g, k) => k > i && g.name && g.module === f.module && f.module !== undefined && !isAllocatorFrame(g.name, g.module));
      // only when every frame between them is of the same module (the library's own code)
      if (j > 0 && frames.slice(i, j).every((g) => g.module === f.module)) {
        pick = j;
        break;
      }
    }
    pick = i;
    break;
  }
  if (pick < 0) pick = 0;
  const full = frameName(stack[pick]!);
  return { index: pick, short: frames[pick]!.name ? shortName(full) : full, full };
}

/** The longest a metric label value gets (heaptap_site_inuse_bytes{function=...}). */
export const MAX_LABEL_LENGTH = 120;

/** A site's name as a metric label: the short name, cut to MAX_LABEL_LENGTH characters. */
export function labelName(short: string): string {
  return short.length <= MAX_LABEL_LENGTH ? short : `${short.slice(0, MAX_LABEL_LENGTH - 1)}…`;
}

/**
 * A demangled C++ or Rust name without template and generic arguments (`<…>`), parameter
 * lists, return types and trailing qualifiers:
 *   void std::vector<int, std::allocator<int> >::_M_realloc_insert<int const&>(…)
 *     -> std::vector<…>::_M_realloc_insert<…>
 *   <alloc::vec::Vec<T,A> as core::clone::Clone>::clone -> <alloc::vec::Vec<…> as core::clone::Clone>::clone
 *   core::ptr::drop_in_place::<alloc::vec::Vec<u8>>     -> core::ptr::drop_in_place::<…>
 * Kept whole: operator names (operator<<, operator()), `(anonymous namespace)`, and
 * `{lambda(int)#1}` / `{closure#0}` / `{{closure}}` parts. C names pass through as they are.
 */
export function shortName(name: string): string {
  // glibc's internal aliases (__GI__IO_file_doallocate) by their public names
  if (name.startsWith('__GI_')) name = name.slice(5);
  if (!/[<(\s]/.test(name)) return name;
  let v = shortCache.get(name);
  if (v === undefined) {
    // a profile names the same functions over and over: remembered, up to a bound
    if (shortCache.size >= 65536) shortCache.clear();
    shortCache.set(name, (v = shorten(name, false)));
  }
  return v;
}

const shortCache = new Map<string, string>();

function shorten(name: string, inner: boolean): string {
  let out = '';
  let i = 0;
  const n = name.length;
  while (i < n) {
    const c = name[i]!;
    if (name.startsWith('operator', i) && /^operator\b|^operator[^\w]/.test(name.slice(i, i + 9)) && (i === 0 || !/\w/.test(name[i - 1]!))) {
      // operator<, operator<<=, operator(), operator new[], operator delete
      const m = /^operator(?:\s*(?:new|delete)(?:\[\])?|\(\)|\[\]|->\*?|<=>|<<=?|>>=?|[-+*/%^&|~!=<>,]=?|&&|\|\||\+\+|--|\s+[\w: ]+?(?=\())/.exec(name.slice(i));
      const tok = m ? m[0] : 'operator';
      out += tok;
      i += tok.length;
      continue;
    }
    if (name.startsWith('(anonymous namespace)', i)) {
      out += '(anonymous namespace)';
      i += 21;
      continue;
    }
    if (c === '{') {
      // {lambda(int)#1}, {closure#0}, {{closure}}, {unnamed type#1}: kept whole
      const end = matching(name, i, '{', '}');
      out += name.slice(i, end + 1);
      i = end + 1;
      continue;
    }
    if (c === '<') {
      const end = matching(name, i, '<', '>');
      const prev = out.endsWith('::') ? '::' : out.length === 0 || /[\s(&*,[]$/.test(out) ? 'open' : 'args';
      if (prev === 'open') {
        // a qualified path <Type as Trait>: kept, its own arguments elided
        out += '<' + shorten(name.slice(i + 1, end), true) + '>';
      } else {
        out += '<…>';
      }
      i = end + 1;
      continue;
    }
    if (c === '(' && inner) {
      // inside <Type as Trait>: a type's parentheses (fn(), tuples) are kept
      const end = matching(name, i, '(', ')');
      out += name.slice(i, end + 1);
      i = end + 1;
      continue;
    }
    if (c === '(') {
      // a parameter list (or a C++ function type in a return type): dropped; what follows
      // it is a qualifier (const, &, noexcept, [clone .cold]) unless it goes on with ::
      const end = matching(name, i, '(', ')');
      i = end + 1;
      if (name.startsWith('::', i)) continue;
      break;
    }
    if (c === ' ' || c === '\t') {
      // a space at the top level ends a return type ("void std::…"), unless it is part of
      // a word pair the name itself has ("unsigned long" after operator is handled above)
      const rest = name.slice(i + 1);
      if (/^as /.test(rest) || /(^|[&*(<,\s])(as|mut|dyn|impl|const|unsigned|signed|long|short)$/.test(out)) {
        // Rust's `<T as Trait>`, `&mut T`, `dyn Trait`; C's `unsigned long`
        out += ' ';
        i++;
        continue;
      }
      if (out.length && /^[\w:~<{(]/.test(rest) && !/^(const|volatile|noexcept|&|\[)/.test(rest)) {
        out = '';
        i++;
        continue;
      }
      if (/^(const|volatile|noexcept|&|\[clone|\[abi)/.test(rest)) break;
      out += c;
      i++;
      continue;
    }
    out += c;
    i++;
  }
  return out.trim() || name;
}

/** The index of the bracket closing the one at i (nested pairs counted; the end of the
 * string when it never closes). `->` does not close an angle bracket. */
function matching(s: string, i: number, open: string, close: string): number {
  let depth = 0;
  for (let k = i; k < s.length; k++) {
    const c = s[k]!;
    if (c === open) depth++;
    else if (c === close && !(close === '>' && s[k - 1] === '-')) {
      if (--depth === 0) return k;
    }
  }
  return s.length - 1;
}

// ---------------------------------------------------------------------------------------
// Stacks of a pprof profile.

/** The frames of a profile's samples, innermost first, inlined frames expanded, and their
 * sites; locations and sites are cached, so walking every sample is cheap. */
export class ProfileStacks {
  private readonly locFrames = new Map<number, StackFrame[]>();
  private readonly locs: Map<number, Profile['location'][number]>;
  private readonly fns: Map<number, { name: string; file: string }>;
  private readonly maps: Map<number, { file: string; start: bigint; offset: bigint }>;
  private readonly siteCache = new Map<string, Site>();
  readonly profile: Profile;

  constructor(profile: Profile) {
    this.profile = profile;
    const s = profile.stringTable.strings;
    this.locs = new Map(profile.location.map((l) => [Number(l.id), l]));
    this.fns = new Map(profile.function.map((f) => [Number(f.id), { name: s[Number(f.name)] ?? '', file: s[Number(f.filename)] ?? '' }]));
    this.maps = new Map(profile.mapping.map((m) => [Number(m.id), {
      file: basename(s[Number(m.filename)] ?? ''), start: BigInt(m.memoryStart), offset: BigInt(m.fileOffset),
    }]));
  }

  /** The index of a sample type ('inuse_space'...) in every sample's values, or -1. */
  valueIndex(type: string): number {
    const s = this.profile.stringTable.strings;
    return this.profile.sampleType.findIndex((t) => s[Number(t.type)] === type);
  }

  /** The frames of one location, innermost (inlined) first. */
  locationFrames(id: number): StackFrame[] {
    let out = this.locFrames.get(id);
    if (out) return out;
    const loc = this.locs.get(id);
    const m = loc ? this.maps.get(Number(loc.mappingId)) : undefined;
    const module = m?.file || undefined;
    if (!loc) out = [{ name: '' }];
    else if (loc.line.length) {
      out = loc.line.map((l) => {
        const f = this.fns.get(Number(l.functionId));
        return { name: f?.name ?? '', module, file: f?.file || undefined, line: Number(l.line) || undefined };
      });
    } else {
      const addr = BigInt(loc.address);
      out = [{ name: '', module, offset: m ? addr - m.start + m.offset : addr }];
    }
    this.locFrames.set(id, out);
    return out;
  }

  /** A sample's frames, innermost first. */
  frames(sample: Sample): StackFrame[] {
    return sample.locationId.flatMap((id) => this.locationFrames(Number(id)));
  }

  /** A sample's site (siteOf its frames), with its frames. */
  site(sample: Sample): Site & { frames: StackFrame[] } {
    const frames = this.frames(sample);
    const key = sample.locationId.join(',');
    let site = this.siteCache.get(key);
    if (!site) this.siteCache.set(key, (site = siteOf(frames)));
    return { ...site, frames };
  }
}
