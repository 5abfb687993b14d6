"""The Python way to do the gateway's enqueue job, for `make bench`.

A FastAPI app (Debian's python3-fastapi, served by python3-uvicorn) with
the two routes the Go gateway is benchmarked on. Each enqueues the same
Celery task on the stand-in morag app with apply_async, and answers the
same shape:

  POST /api/v1/ingest/url            JSON IngestURLRequest
      -> morag.ingest_tasks.ingest_url_task(url, source_type, options)
      -> IngestResponse {task_id, status, message, estimated_time}
  POST /process/url?async=true       JSON ProcessURLRequest
      -> morag.worker.process_url_task(url, content_type, options)
      -> 202 {task_id, status_url}

As upstream MoRAG's server.py does, the handlers are `async def` and call
Celery synchronously on the event loop.

    REDIS_URL=redis://... PYTHONPATH=test/python \
        python3 -m uvicorn fastapi_app:app --host 127.0.0.1 --port 8001
"""
from typing import Any, Dict, Optional

from fastapi import FastAPI, HTTPException, Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from morag.ingest_tasks import ingest_url_task
from morag.worker import process_url_task

app = FastAPI(title="MoRAG (Python peer for make bench)")


class IngestURLRequest(BaseModel):
    source_type: Optional[str] = None
    url: str
    webhook_url: Optional[str] = None
    metadata: Optional[Dict[str, Any]] = None


class IngestResponse(BaseModel):
    task_id: str
    status: str = "pending"
    message: str
    estimated_time: Optional[int] = None


class ProcessURLRequest(BaseModel):
    url: str
    content_type: Optional[str] = None
    options: Optional[Dict[str, Any]] = None
    gpu: Optional[bool] = False


@app.post("/api/v1/ingest/url", response_model=IngestResponse)
async def ingest_url(request: IngestURLRequest):
    options = {
        "webhook_url": request.webhook_url,
        "metadata": request.metadata,
        "store_in_vector_db": True,
    }
    task = ingest_url_task.apply_async(args=[request.url, request.source_type, options])
    return IngestResponse(task_id=task.id, status="pending",
                          message=f"URL ingestion started for {request.url}", estimated_time=120)


@app.post("/process/url")
async def process_url(request: ProcessURLRequest, run_async: bool = Query(False, alias="async")):
    # `async` is a Python keyword, hence the alias.
    if not run_async:
        raise HTTPException(status_code=400, detail="this benchmark peer only implements async=true")
    task = process_url_task.apply_async(args=[request.url, request.content_type, request.options or {}],
                                        queue="celery")
    return JSONResponse(status_code=202, content={"task_id": task.id,
                                                  "status_url": f"/api/v1/status/{task.id}"})
