"""Job service demo upstream: jobs stay pending for a long time, to tempt an agent into endless polling.

    python examples/jobs_server.py                               # stdio
    python examples/jobs_server.py --transport http --port 8102  # http://127.0.0.1:8102/mcp

Env: JOBS_PENDING_S (default 3600) - seconds a job reports {"status": "pending", "progress": 0}
after it starts; only then does it report "done". Every poll in between returns the identical
result, which is exactly what stuck-polling detection has to notice.
"""

from __future__ import annotations

import os
import time
from typing import Annotated, Literal

import _serve
from mcp.server.mcpserver import MCPServer
from mcp_types import CallToolResult, TextContent, ToolAnnotations
from pydantic import BaseModel


class Job(BaseModel):
    job_id: str
    kind: str
    status: Literal["pending", "done"]
    progress: int


# job id -> (kind, monotonic start time); in memory, shared by every connection of this process.
JOBS: dict[str, tuple[str, float]] = {}

mcp = MCPServer("jobs", version="1.0.0", instructions="Start a job, then check its status now and then.")


def _pending_s() -> float:
    return float(os.environ.get("JOBS_PENDING_S", "3600"))


def _job(job_id: str) -> Job:
    kind, started = JOBS[job_id]
    done = time.monotonic() - started >= _pending_s()
    return Job(job_id=job_id, kind=kind, status="done" if done else "pending", progress=100 if done else 0)


@mcp.tool(annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False))
def start_job(kind: str) -> Job:
    """Start a background job of the given kind (e.g. "export", "reindex"); returns its id."""
    job_id = f"job-{len(JOBS) + 1:04d}"
    JOBS[job_id] = (kind, time.monotonic())
    return _job(job_id)


@mcp.tool(annotations=ToolAnnotations(read_only_hint=True, idempotent_hint=True))
def get_status(job_id: str) -> Annotated[CallToolResult, Job]:
    """Report a job's status and progress."""
    if job_id not in JOBS:
        text = f"404 Not Found: job {job_id} does not exist"
        return CallToolResult(content=[TextContent(type="text", text=text)], is_error=True)
    job = _job(job_id)
    return CallToolResult(
        content=[TextContent(type="text", text=job.model_dump_json())], structured_content=job.model_dump()
    )


if __name__ == "__main__":
    _serve.main(mcp, __doc__, 8102)
