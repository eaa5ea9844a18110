/* jeprof_check: prints whether the jemalloc this is linked with was built with heap
 * profiling (--enable-prof), and whether it is on, by asking mallctl:
 *   config.prof=1 opt.prof=1 opt.lg_prof_sample=19
 * Run with MALLOC_CONF=prof:true to see opt.prof=1. Exit 1 when mallctl fails. */
#include <stdio.h>
#include <stdbool.h>
#include <stddef.h>
#include <jemalloc/jemalloc.h>

int main(void)
{
	bool config_prof = false, opt_prof = false;
	size_t lg = 0, sz = sizeof config_prof;
	if (mallctl("config.prof", &config_prof, &sz, NULL, 0)) {
		fprintf(stderr, "jeprof_check: mallctl(\"config.prof\") failed\n");
		return 1;
	}
	printf("config.prof=%d", config_prof);
	sz = sizeof opt_prof;
	if (config_prof && mallctl("opt.prof", &opt_prof, &sz, NULL, 0) == 0) {
		printf(" opt.prof=%d", opt_prof);
		sz = sizeof lg;
		if (mallctl("opt.lg_prof_sample", &lg, &sz, NULL, 0) == 0)
			printf(" opt.lg_prof_sample=%zu", lg);
	}
	printf("\n");
	return 0;
}
