"""HTTP/JSON gateway over the LogService (FastAPI, served by uvicorn in the node's loop)."""

from __future__ import annotations

from fastapi import FastAPI

from pyproglog.server.core import LogService
from pyproglog.server.grpc_service import ServerLister


def create_app(service: LogService, servers: ServerLister) -> FastAPI:
    app = FastAPI(title="Proglog", version="1")
    return app
