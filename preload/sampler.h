/* Byte-based Poisson sampling, as in Go, jemalloc and tcmalloc.
 *
 * Model: allocated bytes are a stream; sample points are a Poisson process on it with
 * mean spacing R bytes (HEAPTAP_SAMPLE_RATE, 524288 by default). Each thread keeps a
 * countdown of bytes to its next sample point, drawn from Exp(1/R). An allocation that
 * reaches the sample point is sampled. Because the exponential distribution is memoryless,
 * an allocation of size s is sampled with probability
 *     p(s) = 1 - exp(-s / R)
 * whatever came before it, so weighting a sampled allocation by 1/p objects and s/p bytes
 * gives unbiased estimates. Worked figures at R = 512 KiB: a 4 KiB allocation is sampled
 * with p = 0.0078 and stands for 128.5 objects; a 1 MiB one with p = 0.865 (1.16 objects);
 * a 64 MiB site is seen about 128 times, so its estimate has a relative standard error of
 * about 1/sqrt(128) = 9% (less for sites of large objects, whose p is near 1).
 *
 * R = 1 is exact mode: every allocation is recorded with weight exactly 1.
 *
 * Threading: a sampler is per thread (it lives in initial-exec TLS); not thread safe. */
#ifndef HT_SAMPLER_H
#define HT_SAMPLER_H
#include <stdint.h>
#include "ht.h"

/* xoshiro256** state; seeded from one 64-bit value with splitmix64. */
struct ht_rng { uint64_t s[4]; };

HT_HIDDEN void ht_rng_seed(struct ht_rng *r, uint64_t seed);
HT_HIDDEN uint64_t ht_rng_next(struct ht_rng *r);
/* Uniform in (0, 1]: never 0, so its log is finite. */
HT_HIDDEN double ht_rng_unit(struct ht_rng *r);

/* Bytes to the next sample point: an Exp(1/rate) draw, at least 1. rate 1 gives 0 (exact
 * mode: every allocation reaches the sample point). */
HT_HIDDEN uint64_t ht_next_interval(struct ht_rng *r, uint64_t rate);

/* Weights of a sampled allocation of size bytes at the given rate: objects in HT_OBJ_ONE
 * fixed point and bytes, both rounded to nearest. */
struct ht_weight { uint64_t objects; uint64_t bytes; };
HT_HIDDEN struct ht_weight ht_weight_of(uint64_t size, uint64_t rate);

#endif
