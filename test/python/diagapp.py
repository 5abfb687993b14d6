"""Celery 5.2 fixture app for the Go worker's diag.* tasks.

Python clients use it to send diag.* tasks (app.send_task needs only the
names) and a Python worker runs the same tasks, with the same results, so
that Python and Go workers can share a queue in the mixed-fleet tests:

  diag.echo(*args, **kwargs) -> {"args": [...], "kwargs": {...}, "worker": <node name>}
  diag.sleep(seconds)        -> seconds, storing PROGRESS every second
  diag.fail(message)         -> raises RuntimeError(message)
  diag.retry(times, countdown=1) -> retries `times` times, then returns the retry count
  diag.exhaust(max_retries)  -> retries at once until MaxRetriesExceededError, then returns "exhausted"
  diag.crash()               -> on a Go worker: SIGKILLs the worker (a poison message);
                                here: raises RuntimeError. Keep it on queues only Go
                                workers consume: handing it back with Reject(requeue=True)
                                would race (kombu's reject restores the message, then
                                acks the same delivery tag, erasing the hold of a
                                consumer that took it in between)

Every Python execution INCRs diag:runs:<task id>, so tests can tell how
often a task ran on a Python worker.

Configured from the environment:
  REDIS_URL            broker and result backend (default redis://localhost:6379/0)
  VISIBILITY_TIMEOUT   broker visibility_timeout in seconds (default 3600)
  DIAG_QUEUE           default queue (default "celery")
"""
import json
import os
import sys
import time

import redis
from celery import Celery

REDIS_URL = os.environ.get("REDIS_URL", "redis://localhost:6379/0")

app = Celery("diagapp", broker=REDIS_URL, backend=REDIS_URL)
app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    result_serializer="json",
    timezone="UTC",
    enable_utc=True,
    task_track_started=True,
    task_default_queue=os.environ.get("DIAG_QUEUE", "celery"),
    worker_prefetch_multiplier=1,
    broker_transport_options={
        "visibility_timeout": int(os.environ.get("VISIBILITY_TIMEOUT", "3600")),
    },
    worker_hijack_root_logger=False,
)

_r = redis.Redis.from_url(REDIS_URL)


def _record(task_id):
    _r.incr("diag:runs:%s" % task_id)


@app.task(bind=True, name="diag.echo")
def echo(self, *args, **kwargs):
    _record(self.request.id)
    return {"args": list(args), "kwargs": kwargs, "worker": self.request.hostname}


@app.task(bind=True, name="diag.sleep")
def sleep(self, seconds):
    _record(self.request.id)
    start = time.time()
    while True:
        left = float(seconds) - (time.time() - start)
        if left <= 0:
            return seconds
        time.sleep(min(1.0, left))
        elapsed = time.time() - start
        if elapsed < float(seconds):
            self.update_state(state="PROGRESS", meta={
                "progress": elapsed / float(seconds),
                "message": "slept %.0fs of %gs" % (elapsed, float(seconds)),
            })


@app.task(bind=True, name="diag.fail")
def fail(self, message="diag.fail"):
    _record(self.request.id)
    raise RuntimeError(message)


@app.task(bind=True, name="diag.retry")
def retry(self, times, countdown=1):
    _record(self.request.id)
    if self.request.retries < times:
        raise self.retry(exc=RuntimeError("diag.retry: retry %d of %d" % (self.request.retries + 1, times)),
                         countdown=countdown, max_retries=times)
    return self.request.retries


@app.task(bind=True, name="diag.exhaust")
def exhaust(self, max_retries):
    _record(self.request.id)
    try:
        raise self.retry(countdown=0, max_retries=max_retries)
    except self.MaxRetriesExceededError:
        return "exhausted"


@app.task(bind=True, name="diag.pydouble")
def pydouble(self, x):
    """Python only: lets tests see a Go worker forward what it cannot run."""
    return x * 2


@app.task(bind=True, name="diag.crash")
def crash(self):
    _record(self.request.id)
    raise RuntimeError("diag.crash only crashes Go workers; send it to a queue only Go workers consume")


def poll_states(task_id, timeout=60.0, interval=0.05):
    """Poll AsyncResult.state until ready; return the distinct states seen in order."""
    res = app.AsyncResult(task_id)
    seen = []
    deadline = time.time() + timeout
    while time.time() < deadline:
        state = res.state
        if not seen or seen[-1] != state:
            seen.append(state)
        if state in ("SUCCESS", "FAILURE", "REVOKED"):
            return seen
        time.sleep(interval)
    raise TimeoutError("task %s not ready after %ss; states seen: %s" % (task_id, timeout, seen))


def emit(obj):
    """Print one JSON line for the Go test to parse."""
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()
