// Allocation sites: which frame of a stack "allocated". The innermost frames of a sampled
// stack are often allocator entry points that only pass the allocation on (malloc, operator
// new, std::allocator<>::allocate, strdup, glibc's internal aliases of them such as
// __GI___strdup or __libc_malloc, and well-known wrappers such as xmalloc or CPython's
// _PyObject_Malloc); a site is the first frame past them, as pprof's allocRx does for
// tcmalloc heap profiles. bench/accuracy-read.ts applies the same rule to every profiler. Used by `heaptap top` and `heaptap run` (src/cli/top.ts)
// and by the agent's top sites (src/agent/source.ts), so both name the same site.

/** Leaf frames that only pass an allocation on (matched against the whole, demangled name). */
export const ALLOCATOR_FRAME = new RegExp(
  '^(' +
    [
      'operator new(\\[\\])?(\\(.*\\))?',
      'operator delete(\\[\\])?(\\(.*\\))?',
      '__gnu_cxx::new_allocator<.*>::allocate(\\(.*\\))?',
      'std::__new_allocator<.*>::allocate(\\(.*\\))?',
      'std::allocator<.*>::allocate(\\(.*\\))?',
      'std::allocator_traits<.*>::allocate(\\(.*\\))?',
      // glibc's exported names and internal aliases: __libc_malloc, __GI___libc_malloc,
      // __GI___strdup, __strndup...
      '(__GI_)?(__)?(libc_)?(malloc|calloc|realloc|free|valloc|pvalloc|memalign|posix_memalign|aligned_alloc|reallocarray)',
      '(__GI_)?(__)?(strn?dup|wcsn?dup)',
      // Well-known wrappers that only pass a size on: libiberty's (gcc, binutils), redis's
      // zmalloc.c, CPython's raw and object allocators (the caller is the site: with
      // PYTHONMALLOC=malloc every object goes through these), GLib's.
      'x(malloc|calloc|realloc|strn?dup|memdup)',
      'z(try)?(malloc|calloc|realloc|strdup)(_[a-z_]+)?',
      '_?Py(Mem|Object)_(Raw)?(Malloc|Calloc|Realloc|Strdup)',
      'g_(try_)?(malloc0?|realloc|strdup|strndup|memdup2?)(_n)?',
    ].join('|') +
    ')$',
);

/** Whether `name` is an allocator entry point rather than the code that allocated. */
export function isAllocatorFrame(name: string): boolean {
  return ALLOCATOR_FRAME.test(name);
}
