/* Force-included (-include glibc-pins.h) into every object of the glibc build: binds the
 * glibc functions whose default symbol version is newer than GLIBC_2.17 to their first
 * version, GLIBC_2.2.5 (the x86-64 baseline), so that libheaptap.so built on a new glibc
 * loads on every glibc from 2.17 on. A preloaded library that fails to load makes the
 * program refuse to start ("version `GLIBC_2.34' not found"), so this matters more than
 * anything the library does once loaded. tests/test_library.sh checks the result with
 * objdump -T: any new symbol with a newer version fails it, and needs a line here.
 *
 * Each pinned version is the same function, not an old behaviour:
 *  - glibc 2.34 moved libpthread and libdl into libc.so.6 and gave their functions a new
 *    default version, GLIBC_2.34; the GLIBC_2.2.5 one stays, as an alias of the same code.
 *    On glibc < 2.34 that version is defined by libpthread.so.0 / libdl.so.2, which the
 *    Makefile therefore names as NEEDED (on glibc >= 2.34 they are empty stubs). The
 *    loader matches a versioned reference by version name in every loaded object, not only
 *    in the one the reference was linked against, so dlsym@GLIBC_2.2.5 bound to libc.so.6
 *    at link time is found in libdl.so.2 on glibc 2.31 (test/preload/oldglibc.test.ts).
 *  - pthread_getattr_np got GLIBC_2.32 for the same move (it was in libpthread).
 *  - log got GLIBC_2.29 when it stopped setting errno through a wrapper; log@GLIBC_2.2.5
 *    is that wrapper around the same log, and errno is never read here.
 * Unreferenced pins emit nothing. Only for the glibc build: musl has no symbol versions. */
#if defined(__x86_64__) && !defined(__ILP32__)
#define HT_PIN(sym) __asm__(".symver " #sym "," #sym "@GLIBC_2.2.5")
HT_PIN(pthread_key_create);
HT_PIN(pthread_setspecific);
HT_PIN(pthread_getspecific);
HT_PIN(pthread_key_delete);
HT_PIN(dlsym);
HT_PIN(dlopen);
HT_PIN(dlerror);
HT_PIN(log);
#undef HT_PIN
#else
#error "glibc-pins.h names x86-64 symbol versions; other architectures need their baseline"
#endif
