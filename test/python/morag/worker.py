"""Stand-in for morag.worker: MoRAG's Celery app, config and task signatures.

Task names are Celery's defaults (<module>.<function>), exactly as upstream.
Bodies do deterministic stand-in processing: they read the input, and return
MoRAG's result shape with the input's name, size and sha256 in the metadata,
so tests can check that the right bytes reached the right worker.
"""
import hashlib
import os
import socket
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any, Dict, List, Optional

from celery import Celery

redis_url = os.getenv("REDIS_URL", "redis://localhost:6379/0")

celery_app = Celery("morag_worker")
celery_app.conf.update(
    broker_url=redis_url,
    result_backend=redis_url,
    task_serializer="json",
    accept_content=["json"],
    result_serializer="json",
    timezone="UTC",
    enable_utc=True,
    task_track_started=True,
    broker_connection_retry_on_startup=True,
    task_default_queue="celery",
    task_default_exchange="celery",
    task_default_exchange_type="direct",
    task_default_routing_key="celery",
    task_create_missing_queues=True,
    worker_direct=True,
    worker_prefetch_multiplier=1,
    worker_hijack_root_logger=False,
)
if os.getenv("VISIBILITY_TIMEOUT"):
    celery_app.conf.broker_transport_options = {"visibility_timeout": int(os.environ["VISIBILITY_TIMEOUT"])}

# `celery -A morag.worker` looks for `app` or `celery`.
app = celery_app


_VALID_TYPES = ['document', 'audio', 'video', 'image', 'web', 'youtube', 'text', 'unknown']
_SUFFIX_TYPES = {
    'document': ['.pdf', '.doc', '.docx', '.txt', '.md', '.rtf', '.pptx', '.ppt', '.xlsx', '.xls', '.csv', '.json', '.xml'],
    'audio': ['.mp3', '.wav', '.flac', '.m4a', '.ogg', '.aac'],
    'video': ['.mp4', '.avi', '.mkv', '.mov', '.wmv', '.flv', '.webm'],
    'image': ['.jpg', '.jpeg', '.png', '.gif', '.bmp', '.webp', '.tiff', '.svg'],
    'web': ['.html', '.htm'],
}


def _detect_content_type_from_file(file_path: Path) -> str:
    """MoRAGAPI._detect_content_type_from_file (api.py @ bb0da91)."""
    suffix = file_path.suffix.lower()
    for content_type, suffixes in _SUFFIX_TYPES.items():
        if suffix in suffixes:
            return content_type
    return 'document'


def _morag_content_type(path: str, content_type: Optional[str]) -> str:
    """The type MoRAGAPI.process_file (api.py @ bb0da91) processes a file as:
    detected from the path's suffix when none is given, as given when it is
    a ContentType, else _normalize_content_type: a bare extension maps to
    its type, anything else (a MIME type) becomes 'unknown'."""
    if content_type is None:
        content_type = _detect_content_type_from_file(Path(path))
    if content_type in _VALID_TYPES:
        return content_type
    lower = content_type.lower()
    for t, suffixes in _SUFFIX_TYPES.items():
        if '.' + lower in suffixes:
            return t
    return lower if lower in _VALID_TYPES else 'unknown'


def _describe(path: str, content_type: Optional[str], options: Optional[Dict[str, Any]], started: float) -> Dict[str, Any]:
    data = Path(path).read_bytes()
    name = Path(path).name
    return {
        "success": True,
        "content": f"# Stand-in processing: {name}\n\nProcessed {len(data)} bytes on {socket.gethostname()}.\n",
        "metadata": {
            "file_name": name,
            "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "content_type": content_type,
            "morag_content_type": _morag_content_type(path, content_type),
            "options": options or {},
            "processed_by": "python-standin",
        },
        "processing_time": time.time() - started,
        "error_message": None,
    }


def _url_result(url: str, content_type: Optional[str], started: float) -> Dict[str, Any]:
    return {"success": True, "content": f"# Stand-in URL: {url}\n", "metadata": {"url": url, "content_type": content_type,
            "processed_by": "python-standin"}, "processing_time": time.time() - started, "error_message": None}


def _download(url: str, suffix: str) -> str:
    req = urllib.request.Request(url)
    key = os.getenv("MORAG_API_KEY")
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    fd, tmp = tempfile.mkstemp(suffix=suffix)
    with os.fdopen(fd, "wb") as out, urllib.request.urlopen(req, timeout=60) as resp:
        while True:
            chunk = resp.read(8192)
            if not chunk:
                break
            out.write(chunk)
    return tmp


@celery_app.task(bind=True)
def process_file_task(self, file_path: str, content_type: Optional[str] = None, options: Optional[Dict[str, Any]] = None):
    started = time.time()
    self.update_state(state="PROCESSING", meta={"stage": "starting"})
    return _describe(file_path, content_type, options, started)


@celery_app.task(bind=True)
def process_url_task(self, url: str, content_type: Optional[str] = None, options: Optional[Dict[str, Any]] = None):
    started = time.time()
    self.update_state(state="PROCESSING", meta={"stage": "starting"})
    return {"success": True, "content": f"# Stand-in URL: {url}\n", "metadata": {"url": url, "content_type": content_type,
            "processed_by": "python-standin"}, "processing_time": time.time() - started, "error_message": None}


@celery_app.task(bind=True)
def process_web_page_task(self, url: str, options: Optional[Dict[str, Any]] = None):
    started = time.time()
    self.update_state(state="PROCESSING", meta={"stage": "web_scraping"})
    return {"success": True, "content": f"# Stand-in web page: {url}\n", "metadata": {"url": url, "processed_by": "python-standin"},
            "processing_time": time.time() - started, "error_message": None}


@celery_app.task(bind=True)
def process_youtube_video_task(self, url: str, options: Optional[Dict[str, Any]] = None):
    started = time.time()
    self.update_state(state="PROCESSING", meta={"stage": "youtube_download"})
    return {"success": True, "content": f"# Stand-in YouTube: {url}\n", "metadata": {"url": url, "processed_by": "python-standin"},
            "processing_time": time.time() - started, "error_message": None}


@celery_app.task(bind=True)
def process_batch_task(self, items: List[Dict[str, Any]], options: Optional[Dict[str, Any]] = None):
    self.update_state(state="PROCESSING", meta={"stage": "batch_processing", "total_items": len(items)})
    return [{"success": True, "content": str(item.get("content", "")), "metadata": {"processed_by": "python-standin"},
             "processing_time": 0.0, "error_message": None} for item in items]


@celery_app.task(bind=True)
def search_task(self, query: str, limit: int = 10, filters: Optional[Dict[str, Any]] = None):
    self.update_state(state="PROCESSING", meta={"stage": "searching"})
    # Stand-in results echo the request, so tests can check what arrived.
    return {"results": [{"id": f"standin-{i}", "score": 1.0 - i / 10, "content": query,
                         "metadata": {"limit": limit, "filters": filters, "processed_by": "python-standin"}}
                        for i in range(min(limit, 2))]}


@celery_app.task
def health_check_task():
    return {"status": "healthy", "worker": socket.gethostname(), "gpu": False, "implementation": "python-standin"}


# Remote worker task variants for HTTP file transfer (upstream signatures).

@celery_app.task(bind=True)
def process_file_task_remote(self, file_url: str, user_id: str, content_type: Optional[str] = None,
                             task_options: Optional[Dict[str, Any]] = None):
    started = time.time()
    self.update_state(state="DOWNLOADING", meta={"stage": "downloading_file"})
    # Exactly upstream: the temp file's suffix, which type detection reads,
    # is the URL's (a query string would end up in it).
    suffix = Path(file_url).suffix
    tmp = _download(file_url, suffix)
    try:
        self.update_state(state="PROCESSING", meta={"stage": "processing"})
        result = _describe(tmp, content_type, task_options, started)
        result["metadata"]["temp_suffix"] = suffix
        result["user_id"] = user_id
        return result
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@celery_app.task(bind=True)
def process_url_task_remote(self, url: str, user_id: str, content_type: Optional[str] = None,
                            task_options: Optional[Dict[str, Any]] = None):
    self.update_state(state="PROCESSING", meta={"stage": "starting"})
    result = _url_result(url, content_type, time.time())
    result["user_id"] = user_id
    return result


@celery_app.task(bind=True)
def process_web_page_task_remote(self, url: str, user_id: str, task_options: Optional[Dict[str, Any]] = None):
    self.update_state(state="PROCESSING", meta={"stage": "web_scraping"})
    result = _url_result(url, None, time.time())
    result["user_id"] = user_id
    return result


@celery_app.task(bind=True)
def process_youtube_video_task_remote(self, url: str, user_id: str, task_options: Optional[Dict[str, Any]] = None):
    self.update_state(state="PROCESSING", meta={"stage": "youtube_download"})
    result = _url_result(url, None, time.time())
    result["user_id"] = user_id
    return result


import morag.ingest_tasks  # noqa: E402,F401  (registers morag.ingest_tasks.* on this app)
