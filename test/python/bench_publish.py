"""Publish rate of Python Celery's apply_async: the Python side of the
`make bench` row "publish rate".

    REDIS_URL=redis://... python3 bench_publish.py N QUEUE

Sends wireapp's wire.noop N times with apply_async(queue=QUEUE) in a plain
loop, as an application would, and prints one JSON line:
{"n": N, "seconds": elapsed, "rate": N / elapsed}. One task is sent before
the timing starts, so connecting and declaring the queue are not counted.
"""
import json
import sys
import time


def main(argv):
    if len(argv) != 3:
        sys.stderr.write("usage: bench_publish.py N QUEUE\n")
        return 2
    try:
        n = int(argv[1])
    except ValueError:
        sys.stderr.write("bench_publish.py: N must be an integer, got %r\n" % argv[1])
        return 2
    if n <= 0:
        sys.stderr.write("bench_publish.py: N must be positive, got %d\n" % n)
        return 2
    queue = argv[2]

    from wireapp import noop  # after argument checks: importing connects nothing yet

    noop.apply_async(queue=queue)
    start = time.perf_counter()
    for _ in range(n):
        noop.apply_async(queue=queue)
    elapsed = time.perf_counter() - start
    sys.stdout.write(json.dumps({"n": n, "seconds": elapsed, "rate": n / elapsed}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
