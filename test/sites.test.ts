// Which frames are allocator entry points (skipped when naming a sample's site) and which
// are the code that allocated: `heaptap top`, ?debug=1 and the agent's top sites share it.
import test from 'ava';

import { isAllocatorFrame } from '../src/sites.ts';

test('allocator entry points, glibc aliases and well-known wrappers are skipped; their callers are not', (t) => {
  for (const name of [
    'malloc', 'calloc', 'realloc', 'free', 'posix_memalign', 'aligned_alloc', 'reallocarray',
    '__libc_malloc', '__GI___libc_malloc', '__libc_calloc', '__GI___libc_realloc',
    'strdup', '__strdup', '__GI___strdup', 'strndup', '__strndup', 'wcsdup',
    'operator new(unsigned long)', 'operator new[](unsigned long)', 'operator new',
    'operator new(unsigned long, std::align_val_t)',
    'std::allocator<int>::allocate(unsigned long)',
    '__gnu_cxx::new_allocator<char>::allocate(unsigned long, void const*)',
    'std::__new_allocator<std::pair<int const, int> >::allocate(unsigned long, void const*)',
    'std::allocator_traits<std::allocator<char> >::allocate(std::allocator<char>&, unsigned long)',
    // wrappers that only pass a size on
    'xmalloc', 'xcalloc', 'xrealloc', 'xstrdup', 'zmalloc', 'zcalloc', 'ztrymalloc_usable', 'zrealloc',
    'PyMem_RawMalloc', '_PyMem_RawMalloc', 'PyObject_Malloc', '_PyObject_Calloc', 'PyMem_Realloc',
    'g_malloc', 'g_malloc0', 'g_try_malloc_n', 'g_realloc', 'g_strdup',
  ]) t.true(isAllocatorFrame(name), name);
  for (const name of [
    'my_malloc_wrapper', 'mallocz', 'strdup_or_die', 'xmalloc_failed', 'PyObject_GC_New', 'g_slice_alloc0x',
    'zmalloc2', 'PyList_New',
    'std::vector<int, std::allocator<int> >::push_back(int const&)', 'site_tiny', '',
    'operator newish', 'std::allocator<int>::deallocate(int*, unsigned long)',
  ]) t.false(isAllocatorFrame(name), name);
});
