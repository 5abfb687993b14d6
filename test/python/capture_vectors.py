"""Capture golden task-message vectors from the real Celery 5.2 client.

Usage (Debian's interpreter, fixtures on PYTHONPATH):

    REDIS_URL=redis://127.0.0.1:PORT/0 PYTHONPATH=test/python \
        /usr/bin/python3 test/python/capture_vectors.py protocol/testdata

It starts nothing: it needs a running redis-server at REDIS_URL, and no
worker may consume from it. For each case it empties the "celery" lists
(all priority bands) of that database, sends with apply_async exactly as an
application would, reads the raw envelopes back with LRANGE and writes each
one byte for byte to OUTDIR/<name>.json, plus OUTDIR/manifest.json with what
a decoder must find in each (taken from the apply_async arguments and the
AsyncResult, not from the envelope, so the manifest is an independent
oracle). The Go tests decode every vector and check it against the manifest.
"""
import datetime
import json
import os
import sys
import time

import redis
from celery import chain, group

import wireapp

SEP = "\x06\x16"
QUEUE = "celery"
LISTS = [QUEUE] + [QUEUE + SEP + str(p) for p in (3, 6, 9)]

app = wireapp.app
add, echo = wireapp.add, wireapp.echo
r = redis.Redis.from_url(os.environ["REDIS_URL"])


def sig_expect(sig):
    return {
        "task": sig["task"],
        "args": list(sig["args"]),
        "kwargs": dict(sig["kwargs"]),
        "immutable": bool(sig["immutable"]),
        "task_id": sig["options"].get("task_id"),
    }


def capture(name, send, expect, want=1):
    """Run send() and return manifest entries for the messages it queued."""
    r.delete(*LISTS)
    before = time.time()
    result = send()
    after = time.time()
    found = []
    for key in LISTS:
        # LPUSH + BRPOP: the oldest message is the last element.
        for raw in reversed(r.lrange(key, 0, -1)):
            found.append((key, raw))
    if len(found) != want:
        sys.exit("case %s: expected %d message(s), found %d" % (name, want, len(found)))
    exp = expect(result)
    if not isinstance(exp, list):
        exp = [exp]
    entries = []
    for i, (key, raw) in enumerate(found):
        fname = name + (".json" if want == 1 else "_%d.json" % i)
        with open(os.path.join(OUT, fname), "wb") as f:
            f.write(raw)
        e = {
            "name": name if want == 1 else "%s_%d" % (name, i),
            "file": fname,
            "list_key": key,
            "sent_between": [before, after],
        }
        e.update(exp[i])
        entries.append(e)
    return entries


def base(task, task_id, args, kwargs, **kw):
    e = {
        "protocol": 2,
        "task": task,
        "id": task_id,
        "root_id": task_id,
        "parent_id": None,
        "group": None,
        "group_index": None,
        "args": list(args),
        "kwargs": kwargs,
        "priority": 0,
        "exchange": "",
        "routing_key": QUEUE,
        "retries": 0,
        "timelimit": [None, None],
        # eta/expires: eta_countdown/expires_in (seconds after sending) or
        # eta_exact (aware ISO); absent means none.
        "ignore_result": False,
        "shadow": None,
        "headers": {},
        "callbacks": None,
        "errbacks": None,
        "chain": None,
        "compression": None,
    }
    e.update(kw)
    return e


UNICODE_ARGS = ("héllo wörld ☃", "日本語 \U0001F600", "", "tab\tnewline\n")
UNICODE_KWARGS = {
    "nested": {"a": [1, {"b": None, "c": True, "d": False}], "é": "ü"},
    "empty_list": [],
    "empty_dict": {},
    "quote": "it's \"q\" <&> \\",
}
NUMBER_ARGS = (2 ** 70, -(2 ** 63), 3.14159, 0.1, 1e-7, 2.0, 0)
NAIVE_ETA = datetime.datetime(2030, 1, 2, 3, 4, 5, 678900)


def main():
    entries = []
    entries += capture(
        "simple", lambda: add.apply_async((2, 2)),
        lambda res: base("wire.add", res.id, [2, 2], {}))
    entries += capture(
        "unicode_nested", lambda: echo.apply_async(UNICODE_ARGS, UNICODE_KWARGS),
        lambda res: base("wire.echo", res.id, UNICODE_ARGS, UNICODE_KWARGS))
    entries += capture(
        "bigint_float", lambda: echo.apply_async(NUMBER_ARGS),
        lambda res: base("wire.echo", res.id, NUMBER_ARGS, {}))
    entries += capture(
        "eta_expires_limits",
        lambda: add.apply_async((1, 2), countdown=60, expires=3600,
                                time_limit=30, soft_time_limit=20.5),
        lambda res: base("wire.add", res.id, [1, 2], {}, timelimit=[30, 20.5],
                         eta_countdown=60, expires_in=3600))
    entries += capture(
        "eta_naive_shadow",
        lambda: add.apply_async((1, 1), eta=NAIVE_ETA, shadow="wire.add.shadowed"),
        lambda res: base("wire.add", res.id, [1, 1], {}, shadow="wire.add.shadowed",
                         eta_exact=NAIVE_ETA.replace(tzinfo=datetime.timezone.utc).isoformat()))
    entries += capture(
        "priority5", lambda: add.apply_async((5, 5), priority=5),
        lambda res: base("wire.add", res.id, [5, 5], {}, priority=5))
    entries += capture(
        "priority9", lambda: add.apply_async((9, 9), priority=9),
        lambda res: base("wire.add", res.id, [9, 9], {}, priority=9))
    hdrs = {"x-trace": "abc", "x-count": 3, "x-obj": {"k": [1, 2.5]}}
    entries += capture(
        "custom_headers", lambda: add.apply_async((1, 2), headers=hdrs),
        lambda res: base("wire.add", res.id, [1, 2], {}, headers=hdrs))
    link, link_error = add.s(10), echo.si("err")
    entries += capture(
        "link", lambda: add.apply_async((1, 2), link=link, link_error=link_error),
        lambda res: base("wire.add", res.id, [1, 2], {},
                         callbacks=[sig_expect(link)], errbacks=[sig_expect(link_error)]))

    def chain_expect(res):
        t3, t2, t1 = res.id, res.parent.id, res.parent.parent.id
        return base("wire.add", t1, [2, 2], {}, chain=[
            {"task": "wire.add", "args": [8], "kwargs": {}, "immutable": False, "task_id": t3},
            {"task": "wire.add", "args": [4], "kwargs": {}, "immutable": False, "task_id": t2},
        ])
    entries += capture(
        "chain", lambda: chain(add.s(2, 2), add.s(4), add.s(8)).apply_async(), chain_expect)

    # Celery 5.2 sets group_index only for chord headers; a plain group
    # sends it as null.
    def group_expect(res):
        return [base("wire.add", child.id, list(a), {}, group=res.id)
                for child, a in zip(res.results, [(1, 1), (2, 2)])]
    entries += capture(
        "group", lambda: group(add.s(1, 1), add.s(2, 2)).apply_async(), group_expect, want=2)

    entries += capture(
        "compression_zlib", lambda: add.apply_async((5, 6), compression="zlib"),
        lambda res: base("wire.add", res.id, [5, 6], {}, compression="application/x-gzip"))
    entries += capture(
        "ignore_result", lambda: add.apply_async((1, 1), ignore_result=True),
        lambda res: base("wire.add", res.id, [1, 1], {}, ignore_result=True))

    # Protocol 1: the choice is cached on first use, so drop the cache.
    app.conf.task_protocol = 1
    app.amqp.__dict__.pop("create_task_message", None)
    try:
        entries += capture(
            "protocol1",
            lambda: add.apply_async((3, 4), countdown=10, time_limit=7),
            lambda res: base("wire.add", res.id, [3, 4], {}, protocol=1, root_id=None,
                             timelimit=[7, None], eta_countdown=10))
    finally:
        app.conf.task_protocol = 2
        app.amqp.__dict__.pop("create_task_message", None)

    manifest = {
        "celery": __import__("celery").__version__,
        "kombu": __import__("kombu").__version__,
        "note": "captured by test/python/capture_vectors.py; each file is one raw envelope as LRANGEd from list_key",
        "cases": entries,
    }
    with open(os.path.join(OUT, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1, ensure_ascii=False, sort_keys=True)
        f.write("\n")
    r.delete(*LISTS)
    print("wrote %d vectors to %s" % (len(entries), OUT))


if __name__ == "__main__":
    OUT = sys.argv[1] if len(sys.argv) > 1 else "protocol/testdata"
    os.makedirs(OUT, exist_ok=True)
    main()
