"""On-demand models under a GPU budget (a ``CORRAL_GPU_INVENTORY`` file, no GPU needed): waking a
model whose GPU lacks memory unloads the least recently used idle on-demand model first; when
nothing idle frees enough, the request gets 503 naming who holds the memory, and nothing is
unloaded."""

from __future__ import annotations

import json
import os
from pathlib import Path

import openai
import pytest
from launcher_helpers import Stack
from openai import OpenAI

from support import free_port, wait_until

pytestmark = pytest.mark.slow
GIB = 1 << 30


def test_waking_evicts_the_idle_model_or_refuses_naming_the_holders(
    tmp_path: Path, stacks: list[Stack]
) -> None:
    inv = tmp_path / "gpus.json"
    # A foreign process (this test's own PID: not a corral process) holds 40 of 80 GiB.
    gpu = {"index": 0, "name": "H100", "memory_total": 80 * GIB}
    foreign = [{"pid": os.getpid(), "used_memory": 40 * GIB}]
    inv.write_text(json.dumps({"gpus": [{**gpu, "processes": foreign}]}))
    registry, router = free_port(), free_port()
    body = f"[registry]\nport = {registry}\n[router]\nport = {router}\n"
    for name, gb in (("a", 30), ("b", 30), ("big", 50)):
        body += (
            f'[[backend]]\nname = "{name}"\npreset = "mock"\nmodels = ["{name}-model"]\n'
            f"port = {free_port()}\n"
            f'start = "on_demand"\ngpus = [[0]]\ngpu_memory_gb = {gb}\n'
        )
    s = Stack(tmp_path, body, env={**os.environ, "CORRAL_GPU_INVENTORY": str(inv)})
    stacks.append(s)
    s.up()
    client = OpenAI(base_url=f"http://127.0.0.1:{router}/v1", api_key="none", max_retries=0, timeout=60)
    wait_until(lambda: len(client.models.list().data) == 3, 20, what="three on-demand models listed")

    def ask(model: str) -> str:
        msgs = [{"role": "user", "content": "hi"}]
        r = client.chat.completions.create(model=model, messages=msgs, max_tokens=2)  # type: ignore[arg-type]
        return r.choices[0].message.content or ""

    assert ask("a-model")  # 40 GiB free: a (30) fits
    # The launcher's view follows the sitter's /health a poll later than the router's.
    wait_until(lambda: s.services()["a-0"]["state"] == "healthy", 15, what="a-0 healthy")
    assert ask("b-model")  # 10 GiB free: the idle a is unloaded first
    wait_until(
        lambda: (svc := s.services())["b-0"]["state"] == "healthy" and svc["a-0"]["state"] == "stopped",
        15,
        what="b-0 healthy and a-0 stopped",
    )

    with pytest.raises(openai.APIStatusError) as info:
        ask("big-model")  # 50 needed; even with b gone only 40 would be free
    assert info.value.status_code == 503
    msg = info.value.response.json()["error"]["message"]
    assert "GPU 0 needs 50.0 GiB" in msg and f"PID {os.getpid()}" in msg and "model b" in msg, msg
    assert s.services()["b-0"]["state"] == "healthy"  # nothing unloaded for a refusal
