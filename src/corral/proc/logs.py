"""Log capture: the child writes straight into a file; we follow the file for tail and callbacks.

Why a file and not a pipe: a pipe dies with the supervisor and the child then gets SIGPIPE/EPIPE
on its next write, which would make adoption useless; a pipe also blocks a chatty child whenever
the reader lags. An O_APPEND file descriptor has neither problem. Rotation is copy-then-truncate
(logrotate's ``copytruncate``) so the inode the child holds stays the log file; a few bytes
written during the copy itself can be lost, which is the usual trade-off.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import tempfile
from collections import deque
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

POLL_S = 0.1  # how often the follower looks for new output
_READ_CHUNK = 1 << 20  # bytes read per poll at most: the event loop is never held long
_MAX_LINE = 8192  # longer lines are cut in the tail (the file keeps them whole)
_PREFILL = 64 * 1024  # bytes of an existing log read back into the tail on adoption

LineCallback = Callable[[str], None]


class LogFile:
    """One process's log: a write fd for the child, a follower task, a rotating file.

    ``path`` None makes an anonymous (already unlinked) file: same mechanics, no name on disk.
    """

    def __init__(
        self,
        path: Path | None,
        *,
        max_bytes: int = 10 * 1024 * 1024,
        backups: int = 3,
        tail_lines: int = 1000,
        lines: deque[str] | None = None,
        on_line: LineCallback | None = None,
    ) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self.on_line = on_line
        # a supervisor passes its own deque so the tail outlives this file's descriptors
        self.lines: deque[str] = deque(maxlen=tail_lines) if lines is None else lines
        self._partial = b""
        self._task: asyncio.Task[None] | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.write_fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            self._read_fd = os.open(path, os.O_RDONLY)
        else:
            fd, name = tempfile.mkstemp(prefix="corral-", suffix=".log")
            os.close(fd)
            self.write_fd = os.open(name, os.O_WRONLY | os.O_APPEND)
            self._read_fd = os.open(name, os.O_RDONLY)
            os.unlink(name)
        size = os.fstat(self._read_fd).st_size
        # a fresh tail starts with the end of an existing log (adoption); a kept tail goes on
        self._offset = max(0, size - _PREFILL) if not self.lines else size
        self._prefill = self._offset > 0  # started mid-file: the first line read is cut
        self.drain(notify=False)
        self._prefill = False

    def note(self, text: str) -> None:
        """Append a supervisor line (``[corral] ...``) to the log."""
        with contextlib.suppress(OSError):
            os.write(self.write_fd, f"[corral] {text}\n".encode())

    def follow(self) -> None:
        """Start following the file (idempotent)."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._follow())

    async def unfollow(self) -> None:
        """Stop following after reading whatever is already written."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.drain()

    def close(self) -> None:
        """Release the file descriptors (the follower must be stopped first)."""
        if self._task is not None:
            self._task.cancel()
            self._task = None
        for fd in (self.write_fd, self._read_fd):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.write_fd = self._read_fd = -1

    async def _follow(self) -> None:
        while True:
            self.drain()
            await asyncio.sleep(POLL_S)

    def drain(self, notify: bool = True) -> None:
        """Read new output into the tail (and the callback); rotate when the file is too big."""
        if self._read_fd < 0:
            return
        size = os.fstat(self._read_fd).st_size
        if size < self._offset:  # truncated behind our back (another supervisor rotated it)
            self._offset, self._partial = 0, b""
        while self._offset < size:
            chunk = os.pread(self._read_fd, min(_READ_CHUNK, size - self._offset), self._offset)
            if not chunk:
                break
            self._offset += len(chunk)
            self._feed(chunk, notify)
        if self._offset > self.max_bytes:
            self._rotate()

    def _feed(self, chunk: bytes, notify: bool) -> None:
        data = self._partial + chunk
        *complete, self._partial = data.split(b"\n")
        if self._prefill and complete:
            complete = complete[1:]  # the first line read mid-file is probably cut
            self._prefill = False
        if len(self._partial) > _MAX_LINE:
            complete.append(self._partial)
            self._partial = b""
        for raw in complete:
            line = raw[:_MAX_LINE].decode("utf-8", "replace").rstrip("\r")
            self.lines.append(line)
            if notify and self.on_line is not None:
                try:
                    self.on_line(line)
                except Exception:  # a foreign callback must not stop log capture
                    log.exception("on_line callback failed")

    def _rotate(self) -> None:
        if self.path is not None and self.backups > 0:
            for i in range(self.backups - 1, 0, -1):
                src = self.path.with_name(f"{self.path.name}.{i}")
                if src.exists():
                    os.replace(src, self.path.with_name(f"{self.path.name}.{i + 1}"))
            with contextlib.suppress(OSError):
                shutil.copyfile(self.path, self.path.with_name(f"{self.path.name}.1"))
        os.ftruncate(self.write_fd, 0)
        self._offset = 0
