"""pychurn: dict, list and string churn for the interpreter workload.

    PYTHONMALLOC=malloc /usr/bin/python3 -s bench/pychurn.py N

With PYTHONMALLOC=malloc every object goes through malloc/free (no pymalloc arenas), so
this is the allocation pattern of the native side of a Python service: many short-lived
small objects, some medium strings, dicts that grow and are dropped. N rounds of about
20k objects each; the output is a checksum, the same for the same N."""
import sys


def one_round(r, keep):
    d = {}
    for i in range(2000):
        k = "key-%d-%d" % (r, i)
        d[k] = [i, str(i) * (1 + i % 7), (i, r)]
    words = " ".join(d.keys()).split(" ")
    joined = "|".join(w.upper() for w in words if w.endswith(("1", "3", "7")))
    rows = [{"id": i, "name": words[i % len(words)], "tags": [r, i, i * 2]} for i in range(500)]
    rows.sort(key=lambda x: (x["name"], -x["id"]))
    blob = bytearray(joined.encode()) * (1 + r % 3)
    keep.append((rows[r % len(rows)]["name"], len(blob)))
    if len(keep) > 200:
        del keep[: len(keep) // 2]
    return len(d) + len(joined) + len(rows)


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100
    keep = []
    total = 0
    for r in range(n):
        total = (total * 31 + one_round(r, keep)) % (1 << 61)
    print(total)


if __name__ == "__main__":
    main()
