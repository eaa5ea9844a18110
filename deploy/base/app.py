# The demo application: a Python service whose heap grows, churns and shrinks, so that the
# heaptap sidecar has something to show. Objects are 1 to 64 KiB: CPython takes anything
# above 512 bytes from malloc (smaller ones come from its own mmap'd arenas, which
# LD_PRELOAD does not see; see docs/kubernetes.md).
import os
import random
import signal
import sys
import time

running = True


def stop(*_):
    global running
    running = False


signal.signal(signal.SIGTERM, stop)
signal.signal(signal.SIGINT, stop)

cache = {}           # long-lived: grows to ~32 MiB, then entries are replaced
sessions = []        # short-lived: a burst per tick, dropped at the next
rng = random.Random(int(os.environ.get("DEMO_SEED", "1")))


def load_entry(key):
    return bytes(rng.randint(1, 64) * 1024)


def handle_request():
    return [bytearray(rng.randint(1, 16) * 1024) for _ in range(rng.randint(8, 64))]


while running:
    key = rng.randrange(2048)
    cache[key] = load_entry(key)
    sessions = handle_request()
    time.sleep(0.01)

print(f"demo: stopping with {len(cache)} cache entries", file=sys.stderr)
