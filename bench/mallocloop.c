/* mallocloop: N malloc(32)/free pairs on one thread, nothing else. The program callgrind
 * counts to price heaptap's non-sampled fast path (bench/run.sh, "fast path").
 *
 *   mallocloop N [SIZE]     N pairs of malloc(SIZE) (default 32) and free
 *
 * Built with -fno-builtin so gcc cannot pair up and delete the malloc/free calls; the
 * pointer goes through a volatile store so the allocation is observable. */
#include <stdio.h>
#include <stdlib.h>

static void *volatile sink;

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: mallocloop N [SIZE]\n");
		return 2;
	}
	unsigned long long n = strtoull(argv[1], NULL, 10);
	size_t size = argc > 2 ? (size_t)strtoull(argv[2], NULL, 10) : 32;
	for (unsigned long long i = 0; i < n; i++) {
		void *p = malloc(size);
		sink = p;
		free(p);
	}
	return 0;
}
