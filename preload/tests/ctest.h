/* Minimal test harness for the preload's C tests: CHECK() records failures and goes on;
 * TEST_MAIN() runs the listed tests and prints "<file>: N passed, N failed". */
#ifndef HT_CTEST_H
#define HT_CTEST_H
#include <stdio.h>
#include <stdlib.h>

static int ct_failures, ct_checks;
#define CHECK(cond, ...) do { ct_checks++; if (!(cond)) { ct_failures++; \
	fprintf(stderr, "%s:%d: CHECK(%s) failed: ", __FILE__, __LINE__, #cond); \
	fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); } } while (0)

typedef void (*ct_fn)(void);
struct ct_case { const char *name; ct_fn fn; };
#define CT_CASE(f) { #f, f }

static inline int ct_run(const char *file, const struct ct_case *cases, int n)
{
	int passed = 0, failed = 0;
	for (int i = 0; i < n; i++) {
		int before = ct_failures;
		cases[i].fn();
		if (ct_failures == before) { passed++; fprintf(stderr, "  ok   %s\n", cases[i].name); }
		else { failed++; fprintf(stderr, "  FAIL %s\n", cases[i].name); }
	}
	fprintf(stderr, "%s: %d passed, %d failed\n", file, passed, failed);
	return failed ? 1 : 0;
}
#define TEST_MAIN(...) int main(void) { static const struct ct_case cs[] = { __VA_ARGS__ }; \
	return ct_run(__FILE__, cs, (int)(sizeof cs / sizeof cs[0])); }
#endif
