"""Stand-in for morag.ingest_tasks: real task names and signatures."""
import os
import time
from typing import Any, Dict, List, Optional

from morag.worker import celery_app


def _hold(options: Optional[Dict[str, Any]]) -> None:
    """Test hook: with options.metadata.standin_wait_for = <redis key>, stay in
    PROGRESS until that key exists (at most 60 s), so tests can observe it."""
    key = ((options or {}).get("metadata") or {}).get("standin_wait_for")
    if not key:
        return
    import redis
    r = redis.Redis.from_url(os.environ.get("REDIS_URL", "redis://localhost:6379/0"))
    deadline = time.time() + 60
    while time.time() < deadline and not r.exists(key):
        time.sleep(0.05)


def _result(source: str, source_type: Optional[str], options: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    return {"success": True, "source": source, "source_type": source_type, "options": options or {},
            "processed_by": "python-standin", "completed_at": time.time()}


@celery_app.task(bind=True)
def ingest_file_task(self, file_path: str, source_type: Optional[str] = None, options: Optional[Dict[str, Any]] = None):
    self.update_state(state="PROGRESS", meta={"progress": 0.5, "message": "ingesting"})
    _hold(options)
    result = _result(file_path, source_type, options)
    result["size"] = os.path.getsize(file_path) if os.path.exists(file_path) else None
    return result


@celery_app.task(bind=True)
def ingest_url_task(self, url: str, source_type: Optional[str] = None, options: Optional[Dict[str, Any]] = None):
    self.update_state(state="PROGRESS", meta={"progress": 0.5, "message": "ingesting"})
    _hold(options)
    return _result(url, source_type, options)


@celery_app.task(bind=True)
def ingest_batch_task(self, items: List[Dict[str, Any]], options: Optional[Dict[str, Any]] = None):
    return [_result(item.get("url") or item.get("file_path"), item.get("source_type"), options) for item in items]
