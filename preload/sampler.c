#include <math.h>
#include "sampler.h"

static uint64_t splitmix64(uint64_t *x)
{
	uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return z ^ (z >> 31);
}

HT_HIDDEN void ht_rng_seed(struct ht_rng *r, uint64_t seed)
{
	uint64_t x = seed;
	for (int i = 0; i < 4; i++)
		r->s[i] = splitmix64(&x);
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

HT_HIDDEN uint64_t ht_rng_next(struct ht_rng *r)
{
	uint64_t *s = r->s;
	uint64_t result = rotl(s[1] * 5, 7) * 9;
	uint64_t t = s[1] << 17;
	s[2] ^= s[0];
	s[3] ^= s[1];
	s[1] ^= s[2];
	s[0] ^= s[3];
	s[2] ^= t;
	s[3] = rotl(s[3], 45);
	return result;
}

HT_HIDDEN double ht_rng_unit(struct ht_rng *r)
{
	return (double)((ht_rng_next(r) >> 11) + 1) * 0x1.0p-53;
}

HT_HIDDEN uint64_t ht_next_interval(struct ht_rng *r, uint64_t rate)
{
	if (rate <= 1)
		return 0;
	double v = -log(ht_rng_unit(r)) * (double)rate;
	if (v < 1.0)
		return 1;
	if (v > 0x1.0p62)
		return 1ull << 62;
	return (uint64_t)v;
}

HT_HIDDEN struct ht_weight ht_weight_of(uint64_t size, uint64_t rate)
{
	struct ht_weight w;
	if (rate <= 1 || size == 0) {
		w.objects = HT_OBJ_ONE;
		w.bytes = size;
		return w;
	}
	/* p = 1 - exp(-s/R), computed as -expm1(-s/R) to keep precision for s << R. */
	double p = -expm1(-(double)size / (double)rate);
	if (p < 0x1.0p-60)
		p = 0x1.0p-60;
	double objs = (double)HT_OBJ_ONE / p;
	double bytes = (double)size / p;
	w.objects = objs >= 0x1.0p63 ? (1ull << 63) : (uint64_t)(objs + 0.5);
	w.bytes = bytes >= 0x1.0p63 ? (1ull << 63) : (uint64_t)(bytes + 0.5);
	return w;
}
