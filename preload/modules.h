/* The region's module table: every loaded object's executable mappings, with path, load
 * bias, file offset and GNU build id, so the sidecar can symbolize recorded addresses even
 * after the process or the module is gone. */
#ifndef HT_MODULES_H
#define HT_MODULES_H
#include "region.h"

/* Walks the loaded objects (dl_iterate_phdr) and brings the table up to date: new objects
 * appended, vanished ones marked UNLOADED. Returns without doing anything when another
 * thread is already scanning (it will see the same objects). */
HT_HIDDEN void ht_modules_scan(struct ht_region *r);
/* Scans when the loader's object list changed since the last scan (dlopen/dlclose), as
 * told by dl_iterate_phdr's adds/subs counters. Cheap: stops at the first object. */
HT_HIDDEN void ht_modules_refresh(struct ht_region *r);
/* Non-zero when pc lies in a LOADED module of the table. */
HT_HIDDEN int ht_modules_cover(struct ht_region *r, uint64_t pc);
HT_HIDDEN ht_spin_t *ht_modules_lock(void);

/* Every call heaptap makes to dl_iterate_phdr goes through this gate. dl_iterate_phdr
 * holds the loader's dl_load_write_lock, which glibc does not reset in a fork child: a
 * fork while one of our threads is inside would leave the child's loader locked forever.
 * ht_loader_enter returns 0 while a fork is under way (skip the walk); the fork prepare
 * handler closes the gate and waits until no heaptap thread is inside. */
HT_HIDDEN int ht_loader_enter(void);
HT_HIDDEN void ht_loader_exit(void);
HT_HIDDEN void ht_loader_fork_prepare(void);
HT_HIDDEN void ht_loader_fork_done(void);
/* Address range [lo, hi) of this library's own code, to drop its frames from stacks. */
HT_HIDDEN void ht_self_range(uint64_t *lo, uint64_t *hi);
#endif
