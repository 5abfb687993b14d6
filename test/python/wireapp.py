"""A plain Celery 5.2 app for wire-level interop tests (no MoRAG).

Configured from the environment:
  REDIS_URL            broker and result backend (default redis://localhost:6379/0)
  VISIBILITY_TIMEOUT   broker visibility_timeout in seconds (default 3600)
  ACKS_LATE            "1" for task_acks_late (default off, Celery's default)

Tasks record executions in Redis (INCR wire:runs:<task id>) so tests can
count how often a task really ran, on whichever worker.
"""
import os
import time

import redis
from celery import Celery

REDIS_URL = os.environ.get("REDIS_URL", "redis://localhost:6379/0")

app = Celery("wireapp", broker=REDIS_URL, backend=REDIS_URL)
app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    result_serializer="json",
    timezone="UTC",
    enable_utc=True,
    task_track_started=True,
    task_acks_late=os.environ.get("ACKS_LATE") == "1",
    worker_prefetch_multiplier=1,
    broker_transport_options={
        "visibility_timeout": int(os.environ.get("VISIBILITY_TIMEOUT", "3600")),
    },
    worker_hijack_root_logger=False,
)

_r = redis.Redis.from_url(REDIS_URL)


def _record(task_id):
    _r.incr("wire:runs:%s" % task_id)


@app.task(bind=True, name="wire.add")
def add(self, x, y):
    _record(self.request.id)
    return x + y


@app.task(bind=True, name="wire.echo")
def echo(self, *args, **kwargs):
    _record(self.request.id)
    return {"args": list(args), "kwargs": kwargs}


@app.task(bind=True, name="wire.fail")
def fail(self, message="boom"):
    _record(self.request.id)
    raise ValueError(message)


@app.task(bind=True, name="wire.sleep")
def sleep(self, seconds):
    _record(self.request.id)
    time.sleep(float(seconds))
    _r.incr("wire:done:%s" % self.request.id)
    return seconds


@app.task(bind=True, name="wire.noop")
def noop(self):
    return None


@app.task(bind=True, name="wire.len")
def length(self, s):
    _record(self.request.id)
    return len(s)
