# A fork-based multiprocessing.Pool: four forked workers (each a process the preload
# follows across fork) compute and allocate; the parent collects the results.
import multiprocessing
import sys


def work(n):
    data = [bytes([n % 251]) * (64 + n % 1000) for _ in range(200)]
    words = {f"k{n}-{i}": i * n for i in range(500)}
    return sum(len(d) for d in data) + sum(words.values()) % 1000


if __name__ == "__main__":
    tasks = int(sys.argv[1]) if len(sys.argv) > 1 else 400
    with multiprocessing.get_context("fork").Pool(4) as pool:
        total = sum(pool.map(work, range(tasks), chunksize=8))
    print(f"pool 4 tasks {tasks} checksum {total}")
