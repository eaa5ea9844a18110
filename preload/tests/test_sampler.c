/* The sampler's statistics: interval distribution and unbiased weights.
 * Fixed seeds make every run identical; the tolerances are still stated as if the seed
 * were random, so a change of seed or generator keeps the tests meaningful. */
#include <math.h>
#include <pthread.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include "ctest.h"
#include "core.h"
#include "reader.h"
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

/* The sampler's model alone: intervals from ht_next_interval, laid over a stream of
 * allocations, and the weights of ht_weight_of for the allocations that reach a sample
 * point. The loop below is the model, not the library's decision: the library's own
 * (core.c, through the core's entry point, with threads and rate changes) is tested by
 * the_cores_estimates_are_unbiased_across_threads_and_rate_changes. */
struct klass { uint64_t size, count; double est_bytes, est_objs; uint64_t samples; };

static void the_models_estimates_are_unbiased_for_every_size(void)
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

/* ---- the library's own decision, through the core ----
 *
 * Allocations go through the core as the interposer sends them: the shim's fast path (the
 * two lines of interpose.c that count an allocation down against the thread's countdown)
 * and, when it runs out, ht_core_record: the core's own decision (a new thread's first
 * interval, the draw at the sample point, the rate change from the control area) and its
 * weights, recorded in a real region and read back with the sidecar's reader. Many
 * short-lived threads (each allocates less than one mean interval, so a thread's first
 * decision matters), long-lived workers that see the rate change mid-stream, and two rate
 * changes written to the control area as `heaptap ctl` writes them. Every class is
 * compared with the exact truth. */
#define CORE_THREADS 2048   /* short-lived threads per phase */
#define CORE_BLOCKS  32     /* 1 KiB blocks each: 32 KiB, less than every rate below */
#define CORE_WORKERS 8
#define CORE_SMALL   16384  /* 512-byte blocks per worker and phase (8 MiB) */
#define CORE_LARGE   128    /* 64 KiB blocks per worker and phase (8 MiB) */
#define CORE_PHASES  3
static const uint64_t core_rates[CORE_PHASES] = { 65536, 4096, 262144 };
enum { K_FRESH, K_SMALL, K_LARGE, K_N };
static const uint64_t k_size[K_N] = { 1024, 512, 65536 };
static const uint64_t k_count[K_N] = { (uint64_t)CORE_THREADS * CORE_BLOCKS,
	(uint64_t)CORE_WORKERS * CORE_SMALL, (uint64_t)CORE_WORKERS * CORE_LARGE };
static int core_phase;
static pthread_barrier_t core_barrier;

static const uint64_t *core_stack(int phase, int k)
{
	static uint64_t pcs[CORE_PHASES][K_N][2];
	pcs[phase][k][0] = 0x400000 + (uint64_t)(phase * K_N + k) * 0x100;
	pcs[phase][k][1] = 0x7f0000;
	return pcs[phase][k];
}

static void shim_alloc(size_t n, const uint64_t *pcs)
{
	struct ht_thread *t = &ht_self;
	if (n < t->countdown) {   /* interpose.c's fast path */
		t->countdown -= n;
		return;
	}
	ht_core_record(NULL, n, pcs, 2, 0);
}

static void *core_fresh(void *arg)
{
	(void)arg;
	for (int i = 0; i < CORE_BLOCKS; i++)
		shim_alloc(k_size[K_FRESH], core_stack(core_phase, K_FRESH));
	return NULL;
}

static void *core_worker(void *arg)
{
	(void)arg;
	for (int ph = 0; ph < CORE_PHASES; ph++) {
		pthread_barrier_wait(&core_barrier);
		for (int i = 0; i < CORE_SMALL; i++) {
			shim_alloc(k_size[K_SMALL], core_stack(ph, K_SMALL));
			if (i % (CORE_SMALL / CORE_LARGE) == 0)
				shim_alloc(k_size[K_LARGE], core_stack(ph, K_LARGE));
		}
		pthread_barrier_wait(&core_barrier);
	}
	return NULL;
}

static void core_estimates_body(const char *dir)
{
	struct ht_config c;
	ht_config_defaults(&c);
	c.rate = core_rates[0];
	c.seed = 20260101;
	c.max_threads = 64;   /* short-lived threads reuse slabs */
	snprintf(c.dir, sizeof c.dir, "%s", dir);
	char err[256] = "";
	CHECK(ht_core_init(&c, 0, err, sizeof err) == 0, "init: %s", err);
	pthread_barrier_init(&core_barrier, NULL, CORE_WORKERS + 1);
	pthread_t w[CORE_WORKERS], t[64];
	for (int i = 0; i < CORE_WORKERS; i++)
		pthread_create(&w[i], NULL, core_worker, NULL);
	for (core_phase = 0; core_phase < CORE_PHASES; core_phase++) {
		if (core_phase > 0) {
			/* What `heaptap ctl <pid> rate N` and the agent's control endpoint write. */
			struct htr_error e;
			CHECK(htr_write_control(ht_g.region.path, 0, 0, 1, core_rates[core_phase], &e) == 0,
			      "control: %s", e.msg);
		}
		pthread_barrier_wait(&core_barrier);
		for (int done = 0; done < CORE_THREADS; done += 64) {
			for (int i = 0; i < 64; i++)
				pthread_create(&t[i], NULL, core_fresh, NULL);
			for (int i = 0; i < 64; i++)
				pthread_join(t[i], NULL);
		}
		pthread_barrier_wait(&core_barrier);
	}
	for (int i = 0; i < CORE_WORKERS; i++)
		pthread_join(w[i], NULL);

	struct htr_snapshot s;
	struct htr_error e;
	if (htr_read_path(ht_g.region.path, 0, &s, &e) < 0) {
		CHECK(0, "read: %s", e.msg);
		return;
	}
	CHECK(s.live.rate_now == core_rates[CORE_PHASES - 1], "last rate acknowledged: %llu",
	      (unsigned long long)s.live.rate_now);
	for (int ph = 0; ph < CORE_PHASES; ph++)
		for (int k = 0; k < K_N; k++) {
			uint64_t pc0 = core_stack(ph, k)[0];
			uint32_t id = 0;
			for (uint32_t i = 0; i < s.stacks.count; i++)
				if (s.stacks.depths[i] == 2 && s.stacks.frames[s.stacks.frame_start[i]] == pc0)
					id = s.stacks.ids[i];
			double bytes = 0, objs = 0, samples = 0;
			for (uint32_t i = 0; i < s.counters.count; i++)
				if (id && s.counters.ids[i] == id) {
					bytes += (double)s.counters.alloc_bytes[i];
					objs += (double)s.counters.alloc_objects[i] / HT_OBJ_ONE;
					samples += (double)s.counters.samples[i];
				}
			/* An allocation of s bytes at rate R is sampled with p = 1 - exp(-s/R),
			 * independently of the others (sample points are a Poisson process on the
			 * byte stream), and stands for s/p bytes: n allocations give a Binomial(n, p)
			 * sample count and an estimate with relative sd sqrt((1 - p) / (n p)). 5.5 sd
			 * either way: false failure 3.8e-8 per check, 1e-6 for the 27 checks, were
			 * the seed random. A change of rate takes effect in a thread at its next
			 * sample point, where the core redraws at the new rate instead of sampling:
			 * what a worker allocates after the change until then (the rest of an
			 * interval drawn at the old rate: Exp, mean R_old) is never sampled, so the
			 * estimate after a change may fall short by up to (W + 5 sqrt(W)) R_old
			 * bytes. Short-lived threads start after the change and see none of it. */
			uint64_t rate = core_rates[ph], size = k_size[k], n = k_count[k];
			double p = -expm1(-(double)size / (double)rate), truth = (double)(size * n);
			double lag = (k != K_FRESH && ph > 0)
				? (CORE_WORKERS + 5 * sqrt(CORE_WORKERS)) * (double)core_rates[ph - 1] : 0;
			double tol = 5.5 * sqrt((1 - p) / ((double)n * p)) + lag / truth;
			double np = (double)n * p, tol_samples = 5.5 * sqrt(np * (1 - p)) + lag / (double)size * p + 1;
			CHECK(fabs(bytes / truth - 1) < tol, "phase %d (rate %llu) class %d (%llu B): bytes %.0f vs %.0f (%+.2f%%, tolerance %.2f%%)",
			      ph, (unsigned long long)rate, k, (unsigned long long)size, bytes, truth, (bytes / truth - 1) * 100, tol * 100);
			CHECK(fabs(objs / (double)n - 1) < tol, "phase %d class %d: objects %.0f vs %llu",
			      ph, k, objs, (unsigned long long)n);
			CHECK(fabs(samples - np) < tol_samples, "phase %d (rate %llu) class %d: %.0f samples, expected %.0f +- %.0f",
			      ph, (unsigned long long)rate, k, samples, np, tol_samples);
		}
	unlink(ht_g.region.path);
	htr_snapshot_free(&s);
}

static void the_cores_estimates_are_unbiased_across_threads_and_rate_changes(void)
{
	/* The core is process-global: run it in a child. */
	char dir[] = "/tmp/heaptap-test-sampler-XXXXXX";
	if (!mkdtemp(dir)) {
		CHECK(0, "mkdtemp");
		return;
	}
	fflush(stderr);
	pid_t pid = fork();
	if (pid == 0) {
		core_estimates_body(dir);
		_exit(ct_failures ? 1 : 0);
	}
	int st = 0;
	waitpid(pid, &st, 0);
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child: status %d", st);
	rmdir(dir);
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
	  CT_CASE(the_models_estimates_are_unbiased_for_every_size),
	  CT_CASE(the_cores_estimates_are_unbiased_across_threads_and_rate_changes), CT_CASE(seeds_make_runs_repeatable))
