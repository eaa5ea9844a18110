# CPython threads: eight threads building lists, dicts and bytes and compressing them with
# zlib (native allocations), joined, with a deterministic checksum.
import sys
import threading
import zlib

rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 300
results = [0] * 8


def work(tid):
    total = 0
    for r in range(rounds):
        items = [f"t{tid}-r{r}-{j}" for j in range(200)]
        table = {s: len(s) for s in items}
        blob = ("|".join(items)).encode() * 4
        total += sum(table.values()) + len(zlib.decompress(zlib.compress(blob, r % 9 + 1)))
    results[tid] = total


threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(f"threads 8 rounds {rounds} checksum {sum(results)}")
