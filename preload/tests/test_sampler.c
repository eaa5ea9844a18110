/* The sampler's statistics: interval distribution and unbiased weights.
 * Fixed seeds make every run identical; the tolerances are still stated as if the seed
 * were random, so a change of seed or generator keeps the tests meaningful. */
#include <math.h>
#include <string.h>
#include "ctest.h"
#include "sampler.h"

#define R 524288.0

static void intervals_have_the_exponential_mean_and_spread(void)
{
	struct ht_rng rng;
	ht_rng_seed(&rng, 42);
	const int n = 1000000;
	double sum = 0, sum2 = 0;
	long below_median = 0, above_3r = 0;
	for (int i = 0; i < n; i++) {
		double v = (double)ht_next_interval(&rng, (uint64_t)R);
		sum += v;
		sum2 += v * v;
		below_median += v < R * M_LN2;
		above_3r += v > 3 * R;
	}
	double mean = sum / n, var = sum2 / n - mean * mean;
	/* Exp(1/R): sd of the sample mean is R/sqrt(n) = 0.1% of R; 0.5% is 5 sigma
	 * (false failure ~6e-7). */
	CHECK(fabs(mean / R - 1) < 0.005, "mean %.1f vs %.1f", mean, R);
	/* Variance R^2; sd of the sample variance is sqrt(8/n) R^2 = 0.28%; 2% is 7 sigma. */
	CHECK(fabs(var / (R * R) - 1) < 0.02, "variance ratio %.4f", var / (R * R));
	/* P(X < R ln 2) = 1/2, sd 0.0005; P(X > 3R) = e^-3 = 0.0498, sd 0.00022; 6 sigma. */
	CHECK(fabs((double)below_median / n - 0.5) < 0.003, "below median %ld", below_median);
	CHECK(fabs((double)above_3r / n - exp(-3)) < 0.0013, "above 3R %ld", above_3r);
}

static void rate_one_is_exact(void)
{
	struct ht_rng rng;
	ht_rng_seed(&rng, 1);
	for (int i = 0; i < 1000; i++)
		CHECK(ht_next_interval(&rng, 1) == 0, "exact mode draws 0");
	struct ht_weight w = ht_weight_of(1, 1);
	CHECK(w.objects == HT_OBJ_ONE && w.bytes == 1, "weight at rate 1");
	w = ht_weight_of(12345, 1);
	CHECK(w.objects == HT_OBJ_ONE && w.bytes == 12345, "weight at rate 1");
}

static void weights_are_the_inverse_sampling_probability(void)
{
	/* tcmalloc's worked figure: a 4 KiB allocation at 512 KiB is sampled with p = 0.00778. */
	struct ht_weight w = ht_weight_of(4096, (uint64_t)R);
	double p = 1 - exp(-4096 / R);
	CHECK(fabs(p - 0.00778) < 0.00001, "p(4096) = %f", p);
	CHECK(llabs((long long)w.objects - llround(HT_OBJ_ONE / p)) <= 1, "objects %llu",
	      (unsigned long long)w.objects);
	CHECK(llabs((long long)w.bytes - llround(4096 / p)) <= 1, "bytes %llu", (unsigned long long)w.bytes);
	/* Large objects: p -> 1, weight -> the object itself. */
	w = ht_weight_of(64u << 20, (uint64_t)R);
	CHECK(w.objects == HT_OBJ_ONE && w.bytes == 64u << 20, "64 MiB weight %llu", (unsigned long long)w.bytes);
	/* Tiny objects keep precision (expm1, not 1 - exp). */
	w = ht_weight_of(1, (uint64_t)R);
	CHECK(fabs((double)w.bytes / (R + 0.5) - 1) < 1e-6, "1-byte weight %llu", (unsigned long long)w.bytes);
}

/* Runs the interposer's decision (countdown fast path, draw at the sample point) over a
 * stream of allocations and sums the weights of the sampled ones. */
struct klass { uint64_t size, count; double est_bytes, est_objs; uint64_t samples; };

static void estimates_are_unbiased_for_every_size(void)
{
	struct klass k[] = {
		{ 16,        2ull << 30 >> 4, 0, 0, 0 },   /* 2 GiB of 16-byte objects */
		{ 4096,      2ull << 30 >> 12, 0, 0, 0 },
		{ 65536,     2ull << 30 >> 16, 0, 0, 0 },
		{ 1u << 20,  2048, 0, 0, 0 },
		{ 8u << 20,  256, 0, 0, 0 },
	};
	int nk = (int)(sizeof k / sizeof k[0]);
	struct ht_rng rng;
	ht_rng_seed(&rng, 7);
	uint64_t countdown = ht_next_interval(&rng, (uint64_t)R);
	uint64_t left[5];
	for (int i = 0; i < nk; i++)
		left[i] = k[i].count;
	/* Interleave the classes: 1 large for many small, as a real program would. */
	for (int active = 1; active;) {
		active = 0;
		for (int i = 0; i < nk; i++) {
			uint64_t burst = i == 0 ? 4096 : i == 1 ? 16 : 1;
			for (uint64_t j = 0; j < burst && left[i]; j++, left[i]--) {
				uint64_t n = k[i].size;
				if (n < countdown) {
					countdown -= n;
					continue;
				}
				countdown = ht_next_interval(&rng, (uint64_t)R);
				struct ht_weight w = ht_weight_of(n, (uint64_t)R);
				k[i].est_bytes += (double)w.bytes;
				k[i].est_objs += (double)w.objects / HT_OBJ_ONE;
				k[i].samples++;
			}
			active |= left[i] != 0;
		}
	}
	for (int i = 0; i < nk; i++) {
		double truth = (double)(k[i].size * k[i].count);
		double rel = k[i].est_bytes / truth - 1;
		double rel_o = k[i].est_objs / (double)k[i].count - 1;
		/* Each class has 2 GiB: about 4096 sample points fall in it, so the estimate's
		 * relative sd is at most 1/sqrt(4096 p_avg) <= 1.6% (small objects; large ones
		 * are sampled with p near 1 and are nearly exact). 8% is 5 sigma: false failure
		 * ~6e-7 per class. */
		CHECK(fabs(rel) < 0.08, "size %llu: %llu samples, bytes off by %.2f%%",
		      (unsigned long long)k[i].size, (unsigned long long)k[i].samples, rel * 100);
		CHECK(fabs(rel_o) < 0.08, "size %llu: objects off by %.2f%%",
		      (unsigned long long)k[i].size, rel_o * 100);
	}
}

static void seeds_make_runs_repeatable(void)
{
	struct ht_rng a, b, c;
	ht_rng_seed(&a, 99);
	ht_rng_seed(&b, 99);
	ht_rng_seed(&c, 100);
	int same = 1, differ = 0;
	for (int i = 0; i < 1000; i++) {
		uint64_t x = ht_rng_next(&a), y = ht_rng_next(&b), z = ht_rng_next(&c);
		same &= x == y;
		differ |= x != z;
	}
	CHECK(same, "same seed, same sequence");
	CHECK(differ, "different seed, different sequence");
}

TEST_MAIN(CT_CASE(intervals_have_the_exponential_mean_and_spread), CT_CASE(rate_one_is_exact),
	  CT_CASE(weights_are_the_inverse_sampling_probability),
	  CT_CASE(estimates_are_unbiased_for_every_size), CT_CASE(seeds_make_runs_repeatable))
