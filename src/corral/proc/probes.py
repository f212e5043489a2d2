"""Run one probe (http GET, tcp connect, exec) with its timeout, and probe loops with thresholds.

The HTTP probe speaks just enough HTTP/1.1 over a raw asyncio connection to read a status line:
no client session to manage, nothing to leak, and it is cheap at a 0.1 s period.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import ssl
import subprocess
import time
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from corral.proc.decide import ThresholdCounter
from corral.proc.spec import Probe

# verdict(ok, detail) is called each time the thresholded verdict changes
Verdict = Callable[[bool, str], Awaitable[None] | None]


async def _http(probe: Probe) -> tuple[bool, str]:
    assert probe.http is not None
    url = urlsplit(probe.http)
    tls = url.scheme == "https"
    port = url.port or (443 if tls else 80)
    ctx = None
    if tls:  # health endpoints are local and often self-signed
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    reader, writer = await asyncio.open_connection(url.hostname, port, ssl=ctx)
    try:
        target = (url.path or "/") + (f"?{url.query}" if url.query else "")
        host = url.netloc.rpartition("@")[2]
        writer.write(f"GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        status_line = await reader.readline()
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()
    parts = status_line.split()
    if len(parts) < 2 or not parts[1].isdigit():
        return False, f"GET {probe.http}: no HTTP status line"
    status = int(parts[1])
    ok = status == probe.expect_status or (probe.expect_status == 200 and 200 <= status < 300)
    return ok, f"GET {probe.http} -> {status}"


async def _tcp(probe: Probe) -> tuple[bool, str]:
    assert probe.tcp is not None
    host, _, port = probe.tcp.rpartition(":")
    _, writer = await asyncio.open_connection(host.strip("[]"), int(port))
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True, f"tcp {probe.tcp} open"


async def _exec(probe: Probe) -> tuple[bool, str]:
    assert probe.exec is not None
    proc = await asyncio.create_subprocess_exec(
        *probe.exec,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        code = await proc.wait()
    except asyncio.CancelledError:  # timed out: take its whole group down
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            await asyncio.shield(proc.wait())
        raise
    return code == 0, f"exec {probe.exec[0]} -> exit {code}"


async def check(probe: Probe) -> tuple[bool, str]:
    """Run ``probe`` once within its timeout: ``(passed, detail)``. Never raises for a failure."""
    run = _http if probe.http is not None else _tcp if probe.tcp is not None else _exec
    try:
        async with asyncio.timeout(probe.timeout_s):
            return await run(probe)
    except TimeoutError:
        return False, f"{probe.describe()}: timed out after {probe.timeout_s:g}s"
    except OSError as exc:
        return False, f"{probe.describe()}: {exc.strerror or exc}"


async def run_loop(
    probe: Probe,
    verdict: Verdict,
    *,
    initial: bool | None = None,
    period_s: float | None = None,
    initial_delay_s: float | None = None,
    until_first: bool = False,
) -> None:
    """Probe forever at ``period_s`` (default the probe's) and report verdict changes.

    ``until_first`` returns after the first verdict of success (the readiness gate).
    """
    counter = ThresholdCounter(probe, initial)
    period = probe.period_s if period_s is None else period_s
    await asyncio.sleep(probe.initial_delay_s if initial_delay_s is None else initial_delay_s)
    while True:
        began = time.monotonic()
        ok, detail = await check(probe)
        changed = counter.observe(ok)
        if changed is not None:
            res = verdict(changed, detail)
            if res is not None:
                await res
            if until_first and changed:
                return
        await asyncio.sleep(max(0.0, period - (time.monotonic() - began)))
