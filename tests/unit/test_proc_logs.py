"""Log capture: a file the child appends to, followed for the tail and the line callback."""

from __future__ import annotations

import os
from pathlib import Path

from corral.proc.logs import LogFile


def _append(log: LogFile, data: bytes) -> None:
    os.write(log.write_fd, data)  # what the child does through its inherited fd


def test_lines_reach_tail_and_callback_partial_lines_wait(tmp_path: Path) -> None:
    seen: list[str] = []
    log = LogFile(tmp_path / "x.log", on_line=seen.append)
    try:
        _append(log, b"one\ntw")
        log.drain()
        assert list(log.lines) == ["one"] and seen == ["one"]
        _append(log, b"o\r\nthree\n")
        log.note("restarting")
        log.drain()
        assert list(log.lines) == ["one", "two", "three", "[corral] restarting"]
        assert seen == list(log.lines)
    finally:
        log.close()
    assert (tmp_path / "x.log").read_bytes().startswith(b"one\ntwo\r\nthree\n")


def test_rotation_copies_then_truncates_same_inode(tmp_path: Path) -> None:
    path = tmp_path / "big.log"
    log = LogFile(path, max_bytes=2048, backups=2)
    try:
        inode = os.stat(path).st_ino
        for gen in range(3):
            _append(log, f"gen{gen} ".encode() * 500 + b"\n")
            log.drain()
        _append(log, b"after\n")
        log.drain()
        assert os.stat(path).st_ino == inode  # the child's fd still points at the live log
        assert path.read_bytes() == b"after\n"
        assert (tmp_path / "big.log.1").read_bytes().startswith(b"gen2")
        assert (tmp_path / "big.log.2").read_bytes().startswith(b"gen1")
        assert not (tmp_path / "big.log.3").exists()
        assert list(log.lines)[-1] == "after"
    finally:
        log.close()


def test_reopening_an_existing_log_prefills_the_tail(tmp_path: Path) -> None:
    path = tmp_path / "old.log"
    path.write_bytes(b"x" * 70_000 + b"\n" + b"".join(f"old {i}\n".encode() for i in range(5)))
    seen: list[str] = []
    log = LogFile(path, on_line=seen.append)
    try:
        assert list(log.lines) == [f"old {i}" for i in range(5)]  # the cut first line is dropped
        assert seen == []  # history is not replayed to the callback
    finally:
        log.close()


def test_anonymous_log_leaves_nothing_on_disk(tmp_path: Path) -> None:
    log = LogFile(None)
    try:
        _append(log, b"hello\n")
        log.drain()
        assert list(log.lines) == ["hello"]
    finally:
        log.close()


def test_long_lines_are_cut_in_the_tail(tmp_path: Path) -> None:
    log = LogFile(tmp_path / "l.log")
    try:
        _append(log, b"y" * 20_000)
        log.drain()
        assert len(log.lines[0]) == 8192
    finally:
        log.close()
