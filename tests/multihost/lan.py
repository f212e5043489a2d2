"""Hosts on a private test LAN made of network namespaces (root only).

Every host is a namespace with one veth whose other end sits on a bridge in a "switch" namespace,
so nothing is added to (or routed through) the machine's own network namespace: the subnet
exists only inside namespaces this module creates, and :meth:`Lan.close` removes them all (and
kills whatever still runs in them). The test process itself becomes the client host with
:meth:`Lan.enter` (``setns`` on the calling thread; sockets opened afterwards live there).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psutil

SUBNET = "10.18.0"  # /24, private (RFC 1918), only inside the namespaces made here
PREFIX = "c18m"  # every namespace this module makes starts with this, then the owner's pid
_CLONE_NEWNET = 0x40000000


def available() -> str | None:
    """Why the LAN cannot be built here (None: it can)."""
    if os.geteuid() != 0:
        return "the multi-host test builds network namespaces and needs root (run it as root)"
    if shutil.which("ip") is None:
        return "the multi-host test needs iproute2's `ip` (apt-get install iproute2)"
    if not Path("/proc/self/ns/net").exists():
        return "no network namespaces on this kernel"
    return None


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``ip ARGS`` (raises with ip's own message on failure when ``check``)."""
    r = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and r.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {r.stderr.strip()}")
    return r


def remove_stale() -> None:
    """Delete namespaces a crashed earlier run of this test left (its owner pid is gone)."""
    for line in ip("netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        if not name.startswith(PREFIX):
            continue
        owner = name[len(PREFIX) :].split("-", 1)[0]
        if owner.isdigit() and not psutil.pid_exists(int(owner)):
            _kill_all_in(name)
            ip("netns", "del", name, check=False)


def _kill_all_in(ns: str) -> None:
    pids = ip("netns", "pids", ns, check=False).stdout.split()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)


class Lan:
    """A bridge and hosts ``name -> 10.18.0.N``; processes started with :meth:`start`."""

    def __init__(self, hosts: list[str], logs: Path) -> None:
        self.tag = f"{PREFIX}{os.getpid()}"
        self.switch = f"{self.tag}-sw"
        self.addr = {h: f"{SUBNET}.{i + 1}" for i, h in enumerate(hosts)}
        self.logs = logs
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self._home: int | None = None
        self._made: list[str] = []

    def ns(self, host: str) -> str:
        """The namespace name of ``host``."""
        return f"{self.tag}-{host}"

    # -- building and tearing down ---------------------------------------------------------
    def create(self) -> None:
        """Make the switch, the hosts and their links (all up)."""
        remove_stale()
        for name in (self.switch, *(self.ns(h) for h in self.addr)):
            ip("netns", "add", name)
            self._made.append(name)
            ip("-n", name, "link", "set", "lo", "up")
        ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        ip("-n", self.switch, "link", "set", "br0", "up")
        for host, addr in self.addr.items():
            port = self.port_name(host)
            ip(
                "-n",
                self.switch,
                "link",
                "add",
                port,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                self.ns(host),
            )
            ip("-n", self.switch, "link", "set", port, "master", "br0", "up")
            ip("-n", self.ns(host), "addr", "add", f"{addr}/24", "dev", "eth0")
            ip("-n", self.ns(host), "link", "set", "eth0", "up")

    def port_name(self, host: str) -> str:
        """The switch port (veth end on the bridge) of ``host``."""
        return f"p-{host}"[:15]

    def close(self) -> None:
        """Leave the client host, stop every process, remove every namespace (idempotent)."""
        self.leave()
        for _, p in self.procs:
            _kill_group(p)
        for name in self._made:
            _kill_all_in(name)
        for name in reversed(self._made):
            ip("netns", "del", name, check=False)
        self._made.clear()

    # -- links -----------------------------------------------------------------------------
    def link(self, host: str, up: bool) -> None:
        """Plug ``host``'s cable in or pull it (its switch port goes down: packets are dropped)."""
        ip("-n", self.switch, "link", "set", self.port_name(host), "up" if up else "down")

    # -- processes -------------------------------------------------------------------------
    def start(
        self, host: str, argv: list[str], name: str, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Run ``argv`` inside ``host`` in its own process group, output to ``logs/<name>.log``."""
        log = open(self.logs / f"{name}.log", "ab")
        p = subprocess.Popen(
            ["ip", "netns", "exec", self.ns(host), *argv],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
        log.close()
        self.procs.append((host, p))
        return p

    def kill_host(self, host: str) -> None:
        """SIGKILL everything running in ``host`` (a power cut)."""
        _kill_all_in(self.ns(host))
        for h, p in self.procs:
            if h == host:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.wait(timeout=10)

    # -- the client host -------------------------------------------------------------------
    def enter(self, host: str) -> None:
        """Move the calling thread (and threads it starts later) into ``host``'s network."""
        libc = ctypes.CDLL(None, use_errno=True)
        if self._home is None:
            self._home = os.open("/proc/self/ns/net", os.O_RDONLY)
        fd = os.open(f"/run/netns/{self.ns(host)}", os.O_RDONLY)
        try:
            if libc.setns(fd, _CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns failed")
        finally:
            os.close(fd)

    def leave(self) -> None:
        """Back to the network namespace the test started in."""
        if self._home is None:
            return
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.setns(self._home, _CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns back failed")
        os.close(self._home)
        self._home = None


def _kill_group(p: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(p.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        p.wait(timeout=10)


@contextlib.contextmanager
def lan(hosts: list[str], logs: Path) -> Iterator[Lan]:
    """A :class:`Lan` that is removed again however the block ends."""
    net = Lan(hosts, logs)
    try:
        net.create()
        yield net
    finally:
        net.close()


def wait(pred: object, timeout: float, what: str, interval: float = 0.05) -> float:
    """Poll ``pred()`` until truthy; the seconds it took (AssertionError naming ``what`` after)."""
    t0 = time.monotonic()
    last: BaseException | None = None
    while time.monotonic() - t0 < timeout:
        try:
            if pred():  # type: ignore[operator]
                return time.monotonic() - t0
        except Exception as exc:
            last = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last error {last!r}")
