// Allocation sites: which frame of a stack "allocated". The innermost frames of a sampled
// stack are often allocator entry points that only pass the allocation on (malloc, operator
// new, std::allocator<>::allocate, strdup, and glibc's internal aliases of them such as
// __GI___strdup or __libc_malloc); a site is the first frame past them, as pprof's allocRx
// does for tcmalloc heap profiles. Used by `heaptap top` and `heaptap run` (src/cli/top.ts)
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
    ].join('|') +
    ')$',
);

/** Whether `name` is an allocator entry point rather than the code that allocated. */
export function isAllocatorFrame(name: string): boolean {
  return ALLOCATOR_FRAME.test(name);
}
