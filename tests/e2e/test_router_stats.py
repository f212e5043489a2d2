"""``/api/router/stats`` and ``/api/router`` from dashboard_api against a real router and mock."""

from __future__ import annotations

import httpx
import openai
from fastapi import FastAPI

from corral.launcher.dashboard_api import dashboard_router
from support import CorralProcs, free_port, wait_http, wait_until


async def test_stats_report_rate_latency_and_tokens_from_a_real_router(procs: CorralProcs) -> None:
    mock_port, router_port = free_port(), free_port()
    procs.start("mock", "--port", str(mock_port), "--models", "m1")
    worker = f"http://127.0.0.1:{mock_port}"
    procs.start("router", "--port", str(router_port), "--worker-url", worker)
    router = f"http://127.0.0.1:{router_port}"
    wait_http(worker + "/health", timeout=30)
    wait_http(router + "/health", timeout=30)
    wait_until(lambda: "m1" in httpx.get(router + "/v1/models").text, 30, what="router routes m1")

    app = FastAPI()
    app.include_router(dashboard_router(router, interval_s=0.001))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://dash") as dash:
        first = (await dash.get("/api/router/stats")).json()
        assert first["error"] is None and first["samples"] == []  # one scrape: no interval yet

        async with openai.AsyncOpenAI(base_url=router + "/v1", api_key="x", max_retries=0) as client:
            for _ in range(5):
                await client.chat.completions.create(
                    model="m1", messages=[{"role": "user", "content": "hi"}], max_tokens=4
                )

        doc = (await dash.get("/api/router/stats")).json()
        row = doc["samples"][-1]
        assert row["rps"] > 0
        assert row["tokens_per_s"] > 0
        assert row["p50_ms"] is not None and 0 < row["p50_ms"] <= row["p99_ms"]

        view = (await dash.get("/api/router")).json()
        [static] = [m for m in view["models"] if m["name"] == "(static)"]
        assert static["instances"][0]["url"] == worker
        assert static["instances"][0]["circuit"] == "closed"


async def test_stats_name_the_router_when_it_is_away() -> None:
    app = FastAPI()
    app.include_router(dashboard_router(f"http://127.0.0.1:{free_port()}"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://dash") as dash:
        doc = (await dash.get("/api/router/stats")).json()
        assert doc["samples"] == [] and "/metrics" in doc["error"]
        r = await dash.get("/api/router")
        assert r.status_code == 503 and r.json()["error"]["message"]
