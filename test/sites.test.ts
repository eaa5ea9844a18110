// src/sites.ts: which frames are allocator or standard-library plumbing (skipped when naming
// a sample's site), the site of a stack, and the short names people read. `heaptap run`,
// top, diff, ?debug=1, the agent's site metric and the accuracy bench all use it.
import test from 'ava';

import { MAX_LABEL_LENGTH, isAllocatorFrame, labelName, shortName, siteOf } from '../src/sites.ts';

test('allocator entry points, glibc aliases and well-known wrappers are skipped; their callers are not', (t) => {
  for (const name of [
    'malloc', 'calloc', 'realloc', 'free', 'posix_memalign', 'aligned_alloc', 'reallocarray',
    '__libc_malloc', '__GI___libc_malloc', '__libc_calloc', '__GI___libc_realloc',
    'strdup', '__strdup', '__GI___strdup', 'strndup', '__strndup', 'wcsdup', '_int_malloc',
    'operator new(unsigned long)', 'operator new[](unsigned long)', 'operator new',
    'operator new(unsigned long, std::align_val_t)',
    'std::allocator<int>::allocate(unsigned long)',
    '__gnu_cxx::new_allocator<char>::allocate(unsigned long, void const*)',
    'std::__new_allocator<std::pair<int const, int> >::allocate(unsigned long, void const*)',
    'std::allocator_traits<std::allocator<char> >::allocate(std::allocator<char>&, unsigned long)',
    // wrappers that only pass a size on
    'xmalloc', 'xcalloc', 'xrealloc', 'xstrdup', 'zmalloc', 'zcalloc', 'ztrymalloc_usable', 'zrealloc',
    'PyMem_RawMalloc', '_PyMem_RawMalloc', 'PyObject_Malloc', '_PyObject_Calloc', 'PyMem_Realloc',
    '_PyObject_Malloc', 'pymalloc_alloc', '_PyObject_GC_New', '_PyObject_GC_Link', '_PyMem_DebugMalloc',
    'g_malloc', 'g_malloc0', 'g_try_malloc_n', 'g_realloc', 'g_strdup', 'g_try_malloc', 'g_slice_alloc', 'g_slice_alloc0',
    'Perl_safesysmalloc', 'Perl_safesyscalloc', 'Perl_safesysrealloc',
    'sqlite3MemMalloc', 'sqlite3Malloc', 'sqlite3MallocZero', 'sqlite3DbMallocRaw', 'sqlite3DbMallocRawNN',
    'sqlite3DbMallocZero', 'sqlite3_malloc', 'sqlite3_malloc64', 'dbMallocRawFinish', 'sqlite3MemRealloc', 'sqlite3Realloc',
  ]) t.true(isAllocatorFrame(name), name);
  for (const name of [
    'my_malloc_wrapper', 'mallocz', 'strdup_or_die', 'xmalloc_failed', 'PyObject_GC_New', 'g_slice_alloc0x',
    'zmalloc2', 'PyList_New', 'Perl_sv_grow', 'sqlite3BtreeInsert', 'sqlite3_step', 'g_hash_table_insert',
    'site_tiny', '', 'operator newish', 'SessionCache::remember(std::string const&, unsigned long)',
    'MyAlloc<std::string>::allocate(unsigned long)', 'stdx::vector<int>::push_back(int)',
  ]) t.false(isAllocatorFrame(name), name);
});

test('the C++ standard library (libstdc++ and libc++) is plumbing, whatever its member', (t) => {
  for (const name of [
    'std::_Vector_base<char, std::allocator<char> >::_M_allocate(unsigned long)',
    'void std::vector<int, std::allocator<int> >::_M_realloc_insert<int const&>(__gnu_cxx::__normal_iterator<int*, std::vector<int, std::allocator<int> > >, int const&)',
    'std::vector<char, std::allocator<char> >::_M_default_append(unsigned long)',
    'std::__detail::_Hashtable_alloc<std::allocator<std::__detail::_Hash_node<int, false> > >::_M_allocate_node<int const&>(int const&)',
    'std::_Rb_tree<int, int, std::_Identity<int>, std::less<int>, std::allocator<int> >::_M_create_node<int const&>(int const&)',
    'std::__cxx11::basic_string<char, std::char_traits<char>, std::allocator<char> >::_M_mutate(unsigned long, unsigned long, char const*, unsigned long)',
    'std::__cxx11::basic_string<char, std::char_traits<char>, std::allocator<char> >::_M_create(unsigned long&, unsigned long)',
    'std::map<std::string, int>::operator[](std::string const&)',
    'std::__1::vector<int, std::__1::allocator<int> >::__push_back_slow_path<int const&>(int const&)',
    'std::_List_base<int, std::allocator<int> >::_M_get_node()',
  ]) t.true(isAllocatorFrame(name), name);
});

test('Rust\'s alloc, core, std and hashbrown are plumbing; the program\'s own code is not', (t) => {
  for (const name of [
    '__rust_alloc', '__rust_realloc', '__rdl_alloc', '__rg_alloc', 'alloc::raw_vec::finish_grow',
    'alloc::raw_vec::RawVec<T,A>::reserve::do_reserve_and_handle', 'alloc::alloc::exchange_malloc',
    'alloc::vec::Vec<T,A>::push', 'hashbrown::raw::RawTable<T,A>::reserve_rehash',
    'std::collections::hash::map::HashMap<K,V,S>::insert', 'alloc::fmt::format::format_inner',
    '<alloc::vec::Vec<T,A> as core::clone::Clone>::clone', '<T as alloc::slice::<impl [T]>::to_vec_in::ConvertVec>::to_vec',
    '<alloc::string::String as core::fmt::Write>::write_str', '<[u8]>::to_vec_in::<alloc::alloc::Global>',
    '<u8 as <[_]>::to_vec_in::ConvertVec>::to_vec::<alloc::alloc::Global>',
  ]) t.true(isAllocatorFrame(name), name);
  for (const name of ['sites::build_index', 'myapp::cache::Cache::put', '<myapp::Doc as core::clone::Clone>::clone', '<myapp::Doc>::new', 'sites::main::{{closure}}']) {
    t.false(isAllocatorFrame(name), name);
  }
});

test('frames in a profiler\'s or an allocator\'s own library are plumbing', (t) => {
  t.true(isAllocatorFrame('je_malloc_default', '/usr/lib/x86_64-linux-gnu/libjemalloc.so.2'));
  t.true(isAllocatorFrame('anything', 'libheaptap.so'));
  t.false(isAllocatorFrame('anything', '/usr/lib/x86_64-linux-gnu/libfoo.so.1'));
});

test('short names elide template arguments and drop parameters, return types and qualifiers', (t) => {
  const cases: Array<[string, string]> = [
    ['void std::vector<int, std::allocator<int> >::_M_realloc_insert<int const&>(__gnu_cxx::__normal_iterator<int*, std::vector<int, std::allocator<int> > >, int const&)',
      'std::vector<…>::_M_realloc_insert<…>'],
    ['SessionCache::remember(std::__cxx11::basic_string<char, std::char_traits<char>, std::allocator<char> > const&, unsigned long)', 'SessionCache::remember'],
    ['Foo::bar() const', 'Foo::bar'],
    ['Foo::operator()(int) const', 'Foo::operator()'],
    ['operator new(unsigned long)', 'operator new'],
    ['operator new[](unsigned long, std::nothrow_t const&)', 'operator new[]'],
    ['Foo<int>::operator<(Foo<int> const&) const', 'Foo<…>::operator<'],
    ['operator<<(std::ostream&, Foo const&)', 'operator<<'],
    ['(anonymous namespace)::Cache::put(int)', '(anonymous namespace)::Cache::put'],
    ['main::{lambda(int)#1}::operator()(int) const', 'main::{lambda(int)#1}::operator()'],
    ['std::vector<int>& Registry::items()', 'Registry::items'],
    ['handle [clone .cold]', 'handle'],
    ['site_tiny', 'site_tiny'],
    ['__GI__IO_file_doallocate', '_IO_file_doallocate'],
    ['__GI___libc_malloc', '__libc_malloc'],
    ['<alloc::vec::Vec<T,A> as core::clone::Clone>::clone', '<alloc::vec::Vec<…> as core::clone::Clone>::clone'],
    ['<&mut W as core::fmt::Write>::write_str', '<&mut W as core::fmt::Write>::write_str'],
    ['core::ptr::drop_in_place::<alloc::vec::Vec<u8>>', 'core::ptr::drop_in_place::<…>'],
    ['<fn() as core::ops::function::FnOnce<()>>::call_once', '<fn() as core::ops::function::FnOnce<…>>::call_once'],
    ['sites::build_index::{{closure}}', 'sites::build_index::{{closure}}'],
    ['a::b<x->y>::c(int)', 'a::b<…>::c'],
  ];
  for (const [full, short] of cases) t.is(shortName(full), short, full);
});

test('a site is the first frame past plumbing; an unnamed frame gives way to a named one of its own library', (t) => {
  const s1 = siteOf([
    'operator new(unsigned long)',
    'std::__new_allocator<char>::allocate(unsigned long, void const*)',
    'std::vector<char, std::allocator<char> >::_M_default_append(unsigned long)',
    'SessionCache::remember(std::string const&, unsigned long)',
    'handle_request(SessionCache&, int, unsigned long)',
  ]);
  t.deepEqual(s1, { index: 3, short: 'SessionCache::remember', full: 'SessionCache::remember(std::string const&, unsigned long)' });
  // Debian's libsqlite3 keeps only exported names: its malloc wrappers are addresses
  const sq = siteOf([
    { name: 'malloc', module: 'libc.so.6' },
    { name: '', module: 'libsqlite3.so.0', offset: 0x1d503n },
    { name: '', module: 'libsqlite3.so.0', offset: 0x1d4b8n },
    { name: 'sqlite3BtreeInsert', module: 'libsqlite3.so.0' },
    { name: 'sqlite3_step', module: 'libsqlite3.so.0' },
  ]);
  t.is(sq.index, 3);
  t.is(sq.short, 'sqlite3BtreeInsert');
  // a stripped executable: its unnamed frame is the site, not libc's named caller of main
  const stripped = siteOf([
    { name: 'malloc', module: 'libc.so.6' },
    { name: '', module: 'churn-stripped', offset: 0x1234n },
    { name: '__libc_start_call_main', module: 'libc.so.6' },
  ]);
  t.deepEqual(stripped, { index: 1, short: 'churn-stripped+0x1234', full: 'churn-stripped+0x1234' });
  // nothing but plumbing: the innermost frame; no frames at all: -1
  t.is(siteOf(['malloc', 'std::allocator<int>::allocate(unsigned long)']).index, 0);
  t.is(siteOf([]).index, -1);
});

test('metric labels are short names, cut to a bounded length', (t) => {
  t.is(labelName('SessionCache::remember'), 'SessionCache::remember');
  const long = 'ns::'.repeat(100) + 'f';
  t.is(labelName(long).length, MAX_LABEL_LENGTH);
  t.true(labelName(long).endsWith('…'));
});
