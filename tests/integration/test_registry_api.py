"""The registry's HTTP API against a real `corral registry` process."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from support import CorralProcs, free_port, wait_http

TOKEN = "s3cret-registry-token"


def start_registry(
    procs: CorralProcs, *args: str, env: dict[str, str] | None = None, log: Path | None = None
) -> str:
    port = free_port()
    procs.start("registry", "--port", str(port), *args, env=env, log=log)
    base = f"http://127.0.0.1:{port}"
    wait_http(base + "/health", timeout=30)
    return base


@pytest.fixture(scope="module")
def registry() -> Iterator[str]:
    procs = CorralProcs()
    try:
        yield start_registry(procs)
    finally:
        procs.close()


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    log = tmp_path_factory.mktemp("reg") / "registry.log"
    procs = CorralProcs()
    try:
        yield (
            start_registry(procs, "--log-level", "debug", env={"CORRAL_REGISTRY_TOKEN": TOKEN}, log=log),
            log,
        )
    finally:
        procs.close()


def body(service: str, port: int = 8100, **kw: object) -> dict[str, object]:
    return {"service": service, "url": f"http://127.0.0.1:{port}", "models": ["m-" + service], **kw}


def assert_error(r: httpx.Response, status: int, param: str | None = None) -> dict[str, object]:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) >= {"message", "type", "code"}
    if param is not None:
        assert err["param"] == param and param in err["message"]
    return err


def test_openapi_is_published(registry: str) -> None:
    paths = httpx.get(registry + "/openapi.json").json()["paths"]
    assert {"/v1/instances", "/v1/instances/{instance_id}/heartbeat", "/v1/watch", "/v1/models"} <= set(paths)


def test_register_get_list_filters_and_revisions(registry: str) -> None:
    r = httpx.post(registry + "/v1/instances", json=body("flt-a", 8101, state="healthy", id="flt-a-1"))
    assert r.status_code == 200, r.text
    lease = r.json()
    assert lease["id"] == "flt-a-1" and lease["lease_ttl_s"] == 90
    assert lease["expires_at"] == pytest.approx(time.time() + 90, abs=10)
    r2 = httpx.post(
        registry + "/v1/instances", json=body("flt-b", 8102, kind="sitter", metadata={"max_concurrency": 4})
    )
    assert r2.json()["revision"] == lease["revision"] + 1
    inst = httpx.get(registry + f"/v1/instances/{r2.json()['id']}").json()
    expected = {"id", "service", "kind", "url", "models", "state", "metadata", "registered_at"}
    assert expected | {"last_heartbeat", "lease_ttl_s"} <= set(inst)
    assert inst["metadata"] == {"max_concurrency": 4} and inst["state"] == "starting"

    def ids(**q: str) -> set[str]:
        doc = httpx.get(registry + "/v1/instances", params=q).json()
        assert doc["revision"] >= r2.json()["revision"]
        return {i["id"] for i in doc["data"] if i["service"].startswith("flt-")}

    assert ids() == {"flt-a-1", r2.json()["id"]}
    assert ids(model="m-flt-a") == {"flt-a-1"}
    assert ids(service="flt-b") == {r2.json()["id"]}
    assert ids(state="healthy") == {"flt-a-1"}
    assert ids(kind="sitter") == {r2.json()["id"]}
    assert ids(model="m-flt-a", kind="sitter") == set()


def test_reregister_with_same_id_is_idempotent(registry: str) -> None:
    b = body("idem", 8110, id="idem-1")
    first = httpx.post(registry + "/v1/instances", json=b).json()
    again = httpx.post(registry + "/v1/instances", json=b).json()
    assert again["id"] == "idem-1" and again["revision"] == first["revision"]
    assert again["instance"]["registered_at"] == first["instance"]["registered_at"]
    listed = httpx.get(registry + "/v1/instances", params={"service": "idem"}).json()["data"]
    assert len(listed) == 1


def test_heartbeat_renews_and_unknown_id_is_404(registry: str) -> None:
    lease = httpx.post(registry + "/v1/instances", json=body("hb", 8120, lease_ttl_s=30)).json()
    r = httpx.put(registry + f"/v1/instances/{lease['id']}/heartbeat")
    assert r.status_code == 200 and r.json()["expires_at"] >= lease["expires_at"]
    r = httpx.put(registry + f"/v1/instances/{lease['id']}/heartbeat", json={"state": "healthy"})
    assert r.json()["revision"] > lease["revision"]
    assert httpx.get(registry + f"/v1/instances/{lease['id']}").json()["state"] == "healthy"
    assert_error(httpx.put(registry + "/v1/instances/never-registered/heartbeat"), 404, "id")
    assert_error(httpx.patch(registry + "/v1/instances/never-registered", json={"state": "x"}), 404)
    assert httpx.delete(registry + f"/v1/instances/{lease['id']}").json()["deleted"] is True
    assert_error(httpx.delete(registry + f"/v1/instances/{lease['id']}"), 404)


def test_models_aggregate_healthy_backends_only(registry: str) -> None:
    post = lambda **kw: httpx.post(registry + "/v1/instances", json=kw).raise_for_status()  # noqa: E731
    post(service="agg", url="http://127.0.0.1:8130", models=["agg-x", "agg-y"], state="healthy")
    post(service="agg", url="http://127.0.0.1:8140", models=["agg-x"], state="healthy")
    post(service="agg", url="http://127.0.0.1:8150", models=["agg-sick"], state="unhealthy")
    post(service="agg", url="http://127.0.0.1:8160", models=["agg-start"], state="starting")
    post(service="agg", url="http://127.0.0.1:8131", models=["agg-sitter"], state="healthy", kind="sitter")
    doc = httpx.get(registry + "/v1/models").json()
    assert doc["object"] == "list"
    ours = [m for m in doc["data"] if m["id"].startswith("agg-")]
    assert [m["id"] for m in ours] == ["agg-x", "agg-y"]
    assert all(
        m["object"] == "model" and m["owned_by"] == "corral" and isinstance(m["created"], int) for m in ours
    )


@pytest.mark.parametrize(
    ("doc", "param"),
    [
        ({"service": "v", "url": "ftp://127.0.0.1:1"}, "url"),
        ({"service": "v", "url": "http://127.0.0.1"}, "url"),
        ({"service": "v", "url": "not a url"}, "url"),
        ({"url": "http://127.0.0.1:1"}, "service"),
        ({"service": "v"}, "url"),
        ({"service": "v", "url": "http://127.0.0.1:1", "kind": "gpu"}, "kind"),
        ({"service": "v", "url": "http://127.0.0.1:1", "models": "m"}, "models"),
        ({"service": "v", "url": "http://127.0.0.1:1", "lease_ttl_s": -1}, "lease_ttl_s"),
        ({"service": "v", "url": "http://127.0.0.1:1", "id": "bad id/x"}, "id"),
        ({"service": "v", "url": "http://127.0.0.1:1", "colour": "red"}, "colour"),
    ],
)
def test_validation_errors_name_the_field(registry: str, doc: dict[str, object], param: str) -> None:
    assert_error(httpx.post(registry + "/v1/instances", json=doc), 422, param)


@pytest.mark.parametrize("raw", [b"{nope", b"[]", b"null", b'"x"', b"\xff\xfe"])
def test_garbage_bodies_are_4xx_never_500(registry: str, raw: bytes) -> None:
    for method, path in [
        ("POST", "/v1/instances"),
        ("PATCH", "/v1/instances/x"),
        ("PUT", "/v1/instances/x/heartbeat"),
    ]:
        r = httpx.request(method, registry + path, content=raw, headers={"content-type": "application/json"})
        assert 400 <= r.status_code < 500, (method, path, r.status_code, r.text)
        assert "error" in r.json()


def test_oversized_body_is_413(registry: str) -> None:
    big = json.dumps(body("big", metadata={"blob": "x" * 70_000})).encode()
    assert_error(httpx.post(registry + "/v1/instances", content=big), 413)

    def chunks() -> Iterator[bytes]:  # no content-length: counted as it streams
        for i in range(0, len(big), 8192):
            yield big[i : i + 8192]

    assert_error(httpx.post(registry + "/v1/instances", content=chunks()), 413)
    assert httpx.get(registry + "/health").status_code == 200


def test_unknown_route_and_method_are_openai_shaped(registry: str) -> None:
    assert_error(httpx.get(registry + "/v2/nothing"), 404)
    assert_error(httpx.post(registry + "/v1/models"), 405)


def test_token_guards_writes_only_and_is_never_logged(secured: tuple[str, Path]) -> None:
    base, log = secured
    b = body("tok", 8170)
    assert_error(httpx.post(base + "/v1/instances", json=b), 401)
    bad = {"Authorization": "Bearer wrong"}
    assert_error(httpx.post(base + "/v1/instances", json=b, headers=bad), 401)
    good = {"Authorization": f"Bearer {TOKEN}"}
    lease = httpx.post(base + "/v1/instances", json=b, headers=good)
    assert lease.status_code == 200
    iid = lease.json()["id"]
    assert_error(httpx.put(base + f"/v1/instances/{iid}/heartbeat"), 401)
    assert_error(httpx.patch(base + f"/v1/instances/{iid}", json={"state": "healthy"}), 401)
    assert_error(httpx.delete(base + f"/v1/instances/{iid}"), 401)
    assert httpx.put(base + f"/v1/instances/{iid}/heartbeat", headers=good).status_code == 200
    # reads stay open
    assert httpx.get(base + "/v1/instances").json()["data"][0]["id"] == iid
    assert httpx.get(base + "/v1/models").status_code == 200
    assert httpx.get(base + f"/v1/instances/{iid}").status_code == 200
    assert httpx.delete(base + f"/v1/instances/{iid}", headers=good).status_code == 200
    assert TOKEN not in log.read_text()


def test_lease_expiry_is_a_delete_event_on_the_watch(registry: str) -> None:
    with httpx.stream("GET", registry + "/v1/watch", params={"since": 0}, timeout=10) as stream:
        lines = stream.iter_lines()
        assert json.loads(next(lines))["type"] == "snapshot"
        t0 = time.monotonic()
        lease = httpx.post(registry + "/v1/instances", json=body("exp", 8180, lease_ttl_s=0.5)).json()
        put = json.loads(next(lines))
        assert (put["type"], put["revision"], put["instance"]["id"]) == (
            "put",
            lease["revision"],
            lease["id"],
        )
        gone = json.loads(next(line for line in lines if line.strip()))
        waited = time.monotonic() - t0
        assert (gone["type"], gone["revision"], gone["instance"]["id"]) == (
            "delete",
            lease["revision"] + 1,
            lease["id"],
        )
        assert 0.4 <= waited < 5
    assert httpx.get(registry + f"/v1/instances/{lease['id']}").status_code == 404
