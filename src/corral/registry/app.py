"""The registry's HTTP API (FastAPI): register, heartbeat, update, list, watch.

Handlers return ``JSONResponse`` directly: the response models document the API in OpenAPI
without re-validating every answer (heartbeats arrive a thousand a second).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Query
from fastapi.responses import JSONResponse, StreamingResponse

from corral import __version__
from corral.errors import error_body
from corral.registry.fastpath import HeartbeatFastPath
from corral.registry.http import ApiError, BodyLimit, check_token, install_error_handlers
from corral.registry.models import (
    Deleted,
    HeartbeatIn,
    Instance,
    InstanceIn,
    InstanceList,
    InstancePatch,
    Kind,
    Lease,
    ModelList,
)
from corral.registry.store import Store, StoreUnavailable

_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "Request body is not valid JSON"},
    401: {"description": "Missing or wrong bearer token (when the registry has one)"},
    404: {"description": "Unknown instance id: register again"},
    413: {"description": "Request body too large"},
}


def _unknown(instance_id: str) -> ApiError:
    return ApiError(404, f"no instance with id {instance_id!r}: register again", "instance_not_found", "id")


def create_app(store: Store, token: str | None = None) -> FastAPI:
    """The registry app over ``store``; with ``token``, writes need ``Authorization: Bearer``."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await store.start()
        try:
            yield
        finally:
            await store.close()

    app = FastAPI(
        title="corral registry",
        version=__version__,
        description="Which backend instance serves which model, where, and whether it is healthy.",
        lifespan=lifespan,
        strict_content_type=False,  # `curl -d` sends form content-type; the body is JSON anyway
    )
    app.state.token = token or None
    app.state.store = store
    install_error_handlers(app)

    async def unavailable(_: Any, exc: Exception) -> JSONResponse:
        return JSONResponse(error_body(str(exc), 503, "store_unavailable"), status_code=503)

    app.add_exception_handler(StoreUnavailable, unavailable)
    app.add_middleware(BodyLimit)
    app.add_middleware(HeartbeatFastPath, store=store, token=app.state.token)  # outermost
    write = [Depends(check_token)]

    @app.get("/health", tags=["registry"])
    async def health() -> JSONResponse:
        """Liveness of the registry itself."""
        instances, revision = await store.list()
        return JSONResponse({"status": "ok", "revision": revision, "instances": len(instances)})

    @app.post(
        "/v1/instances", dependencies=write, response_model=Lease, responses=_ERRORS, tags=["instances"]
    )
    async def register(body: InstanceIn) -> JSONResponse:
        """Register an instance (or re-register: the same id and content only renews the lease)."""
        return JSONResponse(await store.register(body))

    @app.put(
        "/v1/instances/{instance_id}/heartbeat",
        dependencies=write,
        responses=_ERRORS,
        tags=["instances"],
    )
    async def heartbeat(instance_id: str, body: HeartbeatIn | None = None) -> JSONResponse:
        """Renew the lease; an optional body updates state/models/metadata. 404: register again."""
        lease = await store.heartbeat(instance_id, body)
        if lease is None:
            raise _unknown(instance_id)
        return JSONResponse(lease)

    @app.patch(
        "/v1/instances/{instance_id}",
        dependencies=write,
        response_model=Instance,
        responses=_ERRORS,
        tags=["instances"],
    )
    async def update(instance_id: str, body: InstancePatch) -> JSONResponse:
        """Change state, models or metadata (merged; null deletes a key); watchers see it at once."""
        done = await store.update(instance_id, body)
        if done is None:
            raise _unknown(instance_id)
        return JSONResponse(done["instance"], headers={"X-Registry-Revision": str(done["revision"])})

    @app.delete(
        "/v1/instances/{instance_id}",
        dependencies=write,
        response_model=Deleted,
        responses=_ERRORS,
        tags=["instances"],
    )
    async def deregister(instance_id: str) -> JSONResponse:
        """Remove an instance (watchers get a ``delete`` event)."""
        revision = await store.delete(instance_id)
        if revision is None:
            raise _unknown(instance_id)
        return JSONResponse({"id": instance_id, "deleted": True, "revision": revision})

    @app.get("/v1/instances/{instance_id}", response_model=Instance, responses=_ERRORS, tags=["instances"])
    async def get_instance(instance_id: str) -> JSONResponse:
        """One instance."""
        inst = await store.get(instance_id)
        if inst is None:
            raise _unknown(instance_id)
        return JSONResponse(inst)

    @app.get("/v1/instances", response_model=InstanceList, tags=["instances"])
    async def list_instances(
        model: str | None = None,
        service: str | None = None,
        state: str | None = None,
        kind: Kind | None = None,
    ) -> JSONResponse:
        """Instances matching every filter given, and the revision they reflect."""
        instances, revision = await store.list()
        data = [
            i
            for i in instances
            if (model is None or model in i["models"])
            and (service is None or i["service"] == service)
            and (state is None or i["state"] == state)
            and (kind is None or i["kind"] == kind)
        ]
        return JSONResponse({"data": data, "revision": revision})

    @app.get("/v1/models", response_model=ModelList, tags=["models"])
    async def models() -> JSONResponse:
        """Models served by at least one healthy backend (OpenAI list shape)."""
        instances, _ = await store.list()
        created: dict[str, float] = {}
        for i in instances:
            if i["kind"] == "backend" and i["state"] == "healthy":
                for m in i["models"]:
                    created[m] = min(created.get(m, i["registered_at"]), i["registered_at"])
        data = [
            {"id": m, "object": "model", "created": int(t), "owned_by": "corral"}
            for m, t in sorted(created.items())
        ]
        return JSONResponse({"object": "list", "data": data})

    @app.get(
        "/v1/watch",
        tags=["watch"],
        response_class=StreamingResponse,
        responses={200: {"content": {"application/x-ndjson": {}}}},
    )
    async def watch(since: int = Query(0, ge=0)) -> StreamingResponse:
        """Newline-delimited JSON: a ``snapshot`` (since=0 or too old) or the missed events, then live
        ``put``/``delete`` events; blank keep-alive lines every few seconds."""
        return StreamingResponse(
            store.watch(since),
            media_type="application/x-ndjson",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    return app
