"""SIGTERM drains the router: it stops accepting, finishes what is in flight within
``drain_timeout_s``, ends streams still open with an SSE error event, and exits 0."""

from __future__ import annotations

import signal
import socket
import threading
from pathlib import Path

import httpx
from test_router_support import start_mock, start_router

from support import CorralProcs, wait_until

CHAT = {"model": "m1", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}


def _refused(url: str) -> bool:
    host, port = url.removeprefix("http://").split(":")
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
    except OSError:
        return True
    return False


def test_sigterm_finishes_a_request_in_flight_and_exits_0(procs: CorralProcs, tmp_path: Path) -> None:
    mock = start_mock(procs, "m1", "--ttft-ms", "1500")
    router = start_router(procs, [mock], config={"drain_timeout_s": 20.0}, tmp=tmp_path)
    proc = procs.procs[-1]
    result: dict[str, httpx.Response] = {}
    url = router + "/v1/chat/completions"
    t = threading.Thread(target=lambda: result.setdefault("r", httpx.post(url, json=CHAT, timeout=30)))
    t.start()
    wait_until(lambda: httpx.get(router + "/health").json()["in_flight"], 10, what="request in flight")
    proc.send_signal(signal.SIGTERM)
    wait_until(lambda: _refused(router), 10, what="the router stops accepting")
    t.join(30)
    assert result["r"].status_code == 200 and result["r"].json()["choices"]
    assert proc.wait(30) == 0


def test_sigterm_ends_a_stream_past_the_drain_timeout_with_an_error_event(
    procs: CorralProcs, tmp_path: Path
) -> None:
    mock = start_mock(procs, "m1", "--itl-ms", "50")
    router = start_router(procs, [mock], config={"drain_timeout_s": 0.5}, tmp=tmp_path)
    proc = procs.procs[-1]
    body = {**CHAT, "max_tokens": 2000, "stream": True, "ignore_eos": True}
    lines: list[str] = []
    with httpx.stream("POST", router + "/v1/chat/completions", json=body, timeout=30) as r:
        for line in r.iter_lines():  # a clean end of the chunked body, or httpx raises
            lines.append(line)
            if len(lines) == 4:
                proc.send_signal(signal.SIGTERM)
    events = [ln for ln in lines if ln.startswith("data: ")]
    assert '"shutting_down"' in events[-1] and "[DONE]" not in events[-1]
    assert proc.wait(30) == 0


def test_sigterm_lets_the_mock_finish_its_stream_and_exit_0(procs: CorralProcs) -> None:
    mock = start_mock(procs, "m1", "--itl-ms", "20")
    proc = procs.procs[-1]
    body = {**CHAT, "max_tokens": 40, "stream": True, "ignore_eos": True}
    lines: list[str] = []
    with httpx.stream("POST", mock + "/v1/chat/completions", json=body, timeout=30) as r:
        for line in r.iter_lines():
            lines.append(line)
            if len(lines) == 2:
                proc.send_signal(signal.SIGTERM)  # mid-stream: the stream still ends whole
    assert lines[-2:] == ["data: [DONE]", ""] or lines[-1] == "data: [DONE]"
    assert proc.wait(30) == 0
    assert _refused(mock)
