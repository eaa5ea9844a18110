// Many goroutines calling C's malloc and free through cgo: each cgo call runs on an OS
// thread the Go runtime creates as it needs them (with pthread_create), so the preload sees
// allocations from threads it did not see start.
package main

/*
#include <stdlib.h>
#include <string.h>

__attribute__((noinline)) unsigned long battery_c_alloc(int n, int seed) {
	unsigned long sum = 0;
	for (int i = 0; i < n; i++) {
		size_t size = 16 + (size_t)((seed * 31 + i * 17) % 4096);
		unsigned char *p = malloc(size);
		if (p == NULL)
			return 0;
		memset(p, (seed + i) & 0xff, size);
		__asm__ volatile("" : : "r"(p) : "memory"); // or gcc drops the malloc/free pair
		sum += p[size - 1] + size;
		free(p);
	}
	return sum;
}
*/
import "C"

import (
	"fmt"
	"os"
	"strconv"
	"sync"
)

func main() {
	calls := 400
	if len(os.Args) > 1 {
		calls, _ = strconv.Atoi(os.Args[1])
	}
	const goroutines = 32
	sums := make([]uint64, goroutines)
	var wg sync.WaitGroup
	for g := 0; g < goroutines; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < calls; i++ {
				sums[g] += uint64(C.battery_c_alloc(100, C.int(g*calls+i)))
				if i%50 == 0 {
					sums[g] += uint64(len(fmt.Sprintf("%d-%d", g, i))) // Go's heap too
				}
			}
		}(g)
	}
	wg.Wait()
	var total uint64
	for _, s := range sums {
		total += s
	}
	fmt.Printf("goroutines %d calls %d checksum %d\n", goroutines, calls, total)
}
