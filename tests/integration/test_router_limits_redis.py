"""rpm and tpm buckets shared by two routers through one real redis-server (limits_store)."""

from __future__ import annotations

from itertools import count
from pathlib import Path

import httpx
from test_registry_redis import redis_port  # noqa: F401  (the redis-server fixture)
from test_router_support import start_mock, start_router

from corral.router.keys import digest
from support import CorralProcs, wait_until

BODY = {"model": "m1", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 2}
_prefixes = count()


def test_two_routers_share_rpm_and_tpm(procs: CorralProcs, tmp_path: Path, redis_port: int) -> None:  # noqa: F811
    mock = start_mock(procs, "m1")
    cfg = {
        "limits_store": f"redis://127.0.0.1:{redis_port}/0?prefix=lim{next(_prefixes)}:",
        "keys": [
            {"name": "r", "key_sha256": digest("k-r"), "rpm": 3},
            {"name": "t", "key_sha256": digest("k-t"), "tpm": 60},
        ],
    }
    one = start_router(procs, [mock], config=cfg, tmp=tmp_path) + "/v1/chat/completions"
    two = start_router(procs, [mock], config=cfg, tmp=tmp_path) + "/v1/chat/completions"
    r_key = {"Authorization": "Bearer k-r"}
    with httpx.Client(timeout=30) as c:
        codes = [c.post(url, json=BODY, headers=r_key).status_code for url in (one, two, one, two)]
        assert codes == [200, 200, 200, 429]  # three a minute between them, not three each
        refused = c.post(one, json=BODY, headers=r_key)
        assert refused.status_code == 429 and refused.json()["error"]["code"] == "rpm_limit"
        assert 1 <= int(refused.headers["retry-after"]) <= 20

        # A 100-token answer through router one overdraws the shared tpm bucket for router two.
        t_key = {"Authorization": "Bearer k-t"}
        big = {**BODY, "max_tokens": 100, "ignore_eos": True}
        assert c.post(one, json=big, headers=t_key).status_code == 200

        def two_refuses() -> bool:  # the charge goes to Redis just after the answer
            return c.post(two, json=BODY, headers=t_key).status_code == 429

        wait_until(two_refuses, 10, what="router two sees router one's tokens")
