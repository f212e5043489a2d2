"""corral across hosts on a real (namespaced) network: routing, partitions, failover, reboots.

The scenarios run in order on one fleet (see ``fleet.py``); each starts from and returns to a
fleet where both routers route ``m`` to C and D and ``c`` to C. Figures land in figures.json.
"""

from __future__ import annotations

import time

import httpx
import pytest
from fleet import ADMIN_TOKEN, API_KEY, CONNECT_TIMEOUT_S, LEASE_S, SECRETS, Fleet, Load
from lan import wait

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


def test_requests_through_either_router_reach_c_and_d(fleet: Fleet) -> None:
    before = {h: fleet.served_by(h) for h in ("a", "b")}
    for h in ("a", "b"):
        client = fleet.client(h)
        for _ in range(20):
            assert client.chat.completions.create(**CHAT).choices  # type: ignore[call-overload]
        assert client.chat.completions.create(**{**CHAT, "model": "c"}).choices  # type: ignore[call-overload]
        client.close()
    for h in ("a", "b"):
        after = fleet.served_by(h)
        grew = {u for u, n in after.items() if n > before[h].get(u, 0)}
        assert {fleet.backend_url("m-c"), fleet.backend_url("m-d"), fleet.backend_url("c-c")} <= grew, after
    # The sitters registered the address of their LAN interface, derived from --host 0.0.0.0.
    urls = {i["url"] for i in fleet.instances("b") if i["kind"] == "backend"}
    assert urls == {fleet.backend_url(n) for n in ("m-c", "c-c", "m-d")}


def test_tls_everywhere_plain_http_and_wrong_tokens_refused(fleet: Fleet) -> None:
    servers = [fleet.router("a"), fleet.registry("b"), fleet.sitter_api("m-c")]
    for url in servers:
        # A plain-HTTP client gets no answer from a TLS port (the handshake fails, it is closed).
        with pytest.raises(httpx.TransportError):
            httpx.get(url.replace("https://", "http://") + "/health", timeout=3)
        # A client that does not trust the fleet's CA refuses the server.
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(url + "/health", timeout=3)
        assert fleet.http.get(url + "/health").status_code == 200
    h, bad = fleet.http, {"Authorization": "Bearer not-the-token"}
    chat = h.post(fleet.router("b") + "/v1/chat/completions", json=CHAT, headers=bad)
    assert chat.status_code == 401 and chat.json()["error"]["code"] == "invalid_api_key"
    assert h.get(fleet.router("a") + "/workers", headers=bad).status_code == 401
    reg = {"service": "intruder", "url": "http://10.18.0.9:1", "models": ["m"]}
    assert h.post(fleet.registry("a") + "/v1/instances", json=reg, headers=bad).status_code == 401
    assert h.post(fleet.sitter_api("c-c") + "/restart", headers=bad).status_code == 401
    assert fleet.http.get(fleet.router("a") + "/workers", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})


def test_partition_c_then_heal(fleet: Fleet) -> None:
    c_urls = {fleet.backend_url("m-c"), fleet.backend_url("c-c")}
    with Load(fleet) as load:
        wait(lambda: load.count_since(time.monotonic() - 1) > 10, 30, "load running")
        t_cut = time.monotonic()
        fleet.net.link("c", up=False)
        # Both routers stop sending to C within the lease (a connect error, or the lease runs out).
        out = [
            wait(lambda h=h: not (fleet.routable(h, "m") & c_urls), LEASE_S + 3, f"router {h} drops C")  # type: ignore[misc]
            for h in ("a", "b")
        ]
        dropped_s = time.monotonic() - t_cut
        # The lease runs out: C's instances leave the registry; c is known, so 503 at once.
        wait(
            lambda: not (c_urls & {i["url"] for i in fleet.instances("a")}), LEASE_S + 5, "C's lease expires"
        )
        t0 = time.monotonic()
        r = fleet.http.post(
            fleet.router("a") + "/v1/chat/completions",
            json={**CHAT, "model": "c"},
            headers={"Authorization": f"Bearer {API_KEY}"},
        )
        c_503_s = time.monotonic() - t0
        assert r.status_code == 503 and r.json()["error"]["code"] == "model_unavailable", r.text
        assert c_503_s < 0.5
        t_heal = time.monotonic()
        fleet.net.link("c", up=True)
        # Polled lean (one keep-alive request per router per round): the figure is the fleet's.
        back = {h: wait(lambda h=h: fleet.ready_on(h), 10, f"C back on router {h}") for h in ("a", "b")}  # type: ignore[misc]
        back_s = time.monotonic() - t_heal
        wait(lambda: load.count_since(time.monotonic() - 0.5) > 5, 10, "load still running")
    summary = load.summary()
    fleet.figures["partition"] = {
        "routers_drop_c_s": [round(x, 2) for x in out],
        "both_dropped_after_s": round(dropped_s, 2),
        "c_503_s": round(c_503_s, 3),
        "heal_back_in_rotation_s": round(back_s, 2),
        "heal_router_a_s": round(back["a"], 2),
        "heal_total_s": round(time.monotonic() - t_heal, 2),
        **summary,
    }
    assert load.failed() == [], load.failed()[:5]
    assert dropped_s <= LEASE_S + 1
    # No request waited on C's silence much longer than the LAN connect timeout.
    assert summary["max_s"] < CONNECT_TIMEOUT_S + 1.0, summary
    assert back_s <= 2.0 + 0.5, back_s


def test_registry_a_killed_sitters_fail_over_to_b(fleet: Fleet) -> None:
    all_backends = sorted(fleet.backend_url(n) for n in ("m-c", "c-c", "m-d"))
    with Load(fleet) as load:
        wait(lambda: load.count_since(time.monotonic() - 1) > 5, 30, "load running")
        fleet.kill("registry-a")
        t_kill = time.monotonic()
        # Leases are renewed through B (several lease periods pass): nothing expires anywhere.
        while time.monotonic() - t_kill < 2 * LEASE_S:
            assert fleet.backends("b") == all_backends
            assert fleet.fleet_ready()
            time.sleep(0.2)
        failed = list(load.failed())
        fleet.start_registry("a")
        wait(
            lambda: fleet.http.get(fleet.registry("a") + "/health").status_code == 200, 60, "registry A back"
        )
        assert fleet.backends("a") == all_backends
    fleet.figures["registry_a_killed"] = {"held_s": round(2 * LEASE_S, 1), **load.summary()}
    assert failed == [] and load.failed() == [], load.failed()[:5]


def test_redis_stopped_then_back(fleet: Fleet) -> None:
    all_backends = sorted(fleet.backend_url(n) for n in ("m-c", "c-c", "m-d"))
    with Load(fleet) as load:
        wait(lambda: load.count_since(time.monotonic() - 1) > 5, 30, "load running")
        fleet.kill("redis")
        t_stop = time.monotonic()
        # Longer than a lease: routers keep routing on what they know (nothing expires), and the
        # registries keep serving what they know.
        while time.monotonic() - t_stop < LEASE_S + 1:
            assert fleet.fleet_ready()
            assert fleet.backends("a") == fleet.backends("b") == all_backends
            time.sleep(0.2)
        # Writes are refused meanwhile (503: the sitters keep retrying), not lost.
        r = fleet.http.post(fleet.registry("b") + "/v1/instances", json={"service": "x", "url": "http://x:1"})
        assert r.status_code in (401, 503), r.text
        fleet.start_redis()  # empty (no persistence): every sitter re-registers under its own id
        t_back = time.monotonic()
        # One view through either registry, no duplicates: each registry follows the new Redis on
        # its own, so B may still be catching up the moment A has everything.
        resumed_s = wait(
            lambda: fleet.backends("a") == all_backends and fleet.backends("b") == all_backends,
            30,
            "every backend registered again, seen through both registries",
        )
        wait(fleet.fleet_ready, 15, "both routers ready")
        urls = [w["url"] for h in ("a", "b") for w in fleet.workers(h)]
        assert sorted(urls) == sorted(all_backends * 2), urls  # no duplicate instance in any router
    fleet.figures["redis_stopped"] = {
        "down_s": round(t_back - t_stop, 1),
        "writes_resumed_s": round(resumed_s, 2),
        **load.summary(),
    }
    assert load.failed() == [], load.failed()[:5]


def test_reboot_d(fleet: Fleet) -> None:
    d = fleet.backend_url("m-d")
    with Load(fleet) as load:
        wait(lambda: load.count_since(time.monotonic() - 1) > 5, 30, "load running")
        fleet.net.kill_host("d")  # launcher, sitter and backend gone at once, nothing deregistered
        # Both routers notice (a refused connection, or the lease running out) before D "boots".
        gone_s = wait(
            lambda: all(d not in fleet.routable(h, "m") for h in ("a", "b")), LEASE_S + 5, "D out of rotation"
        )
        t_boot = time.monotonic()
        fleet.start_worker_host("d")
        wait(fleet.fleet_ready, 60, "D back in rotation on both routers")
        back_s = time.monotonic() - t_boot
        # The routers may take D's address back (a probe or a circuit trial answers) a moment
        # before the old lease has run out and the new sitter's registration is the one listed.
        wait(lambda: fleet.backends("a").count(d) == 1, LEASE_S + 5, "D listed once by the registry")
        assert [w["url"] for w in fleet.workers("a")].count(d) == 1
        wait(lambda: load.count_since(time.monotonic() - 0.5) > 3, 10, "load still running")
    fleet.figures["reboot_d"] = {
        "out_of_rotation_s": round(gone_s, 2),
        "boot_to_back_in_rotation_s": round(back_s, 2),
        **load.summary(),
    }
    assert load.failed() == [], load.failed()[:5]


def test_no_token_in_any_log(fleet: Fleet) -> None:
    logs = sorted(fleet.dir.rglob("*.log"))  # every process's output, the launcher's and sitters' too
    assert len(logs) >= 10
    for log in logs:
        text = log.read_text(errors="replace")
        for secret in SECRETS:
            assert secret not in text, f"{secret[:6]}... appears in {log.name}"
