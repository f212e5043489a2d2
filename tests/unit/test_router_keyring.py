"""Keys (specs, files, lookup, scopes, reload), token buckets, and the usage log's replay."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from corral.errors import ConfigError
from corral.router import keys as keys_mod
from corral.router.config import RouterSettings
from corral.router.keys import Keyring, KeySpec, digest, read_keys_file
from corral.router.keys_cli import add_to_file, make_spec
from corral.router.limits import Bucket, Limits
from corral.router.usage import Usage


def spec(name: str, key: str, **kw: object) -> KeySpec:
    return KeySpec.model_validate({"name": name, "key_sha256": digest(key), **kw})


def test_lookup_by_hash_scope_globs_and_env_keys() -> None:
    ring = Keyring([spec("a", "ka", models=["llama-*", "mock"])], env_keys=frozenset({"legacy"}))
    k = ring.lookup("Bearer ka")
    assert k is not None and k.name == "a"
    assert k.allows("llama-3-8b") and k.allows("mock") and not k.allows("qwen")
    assert ring.lookup("Bearer nope") is None
    assert ring.lookup("ka") is None and ring.lookup(None) is None
    legacy = ring.lookup("Bearer legacy")
    assert legacy is not None and legacy.name.startswith("env-") and legacy.allows("anything")
    assert "legacy" not in legacy.name and "ka" not in repr(ring.by_name)


def test_spec_rejects_plain_keys_and_bad_hashes() -> None:
    with pytest.raises(ValueError, match="key_sha256"):
        KeySpec.model_validate({"name": "a", "key": "secret"})
    with pytest.raises(ValueError, match="64 hex"):
        KeySpec.model_validate({"name": "a", "key_sha256": "abc"})
    assert spec("a", "k", expires="2020-01-02").expires_at() == 1577923200.0
    with pytest.raises(ValueError, match="same key_sha256"):
        RouterSettings.model_validate({"keys": [spec("a", "k").model_dump(), spec("b", "k").model_dump()]})


def test_keys_file_toml_and_json_errors_name_file_and_field(tmp_path: Path) -> None:
    t = tmp_path / "keys.toml"
    add_to_file(t, make_spec("a", "ka", {"models": ["m*"], "rpm": 60}))
    add_to_file(t, make_spec("b", "kb", {"priority": 3}))
    assert [(s.name, s.rpm, s.priority) for s in read_keys_file(t)] == [("a", 60, 0), ("b", 0, 3)]
    with pytest.raises(ConfigError, match="appears twice"):
        add_to_file(t, make_spec("a", "kc", {}))
    j = tmp_path / "keys.json"
    add_to_file(j, make_spec("c", "kc", {"tpm": 1000}))
    assert read_keys_file(j)[0].tpm == 1000
    j.write_text(json.dumps({"keys": [{"name": "c", "key_sha256": digest("x"), "rpm": -1}]}))
    with pytest.raises(ConfigError) as exc:
        read_keys_file(j)
    assert str(j) in str(exc.value) and "keys[0].rpm" in str(exc.value)
    assert read_keys_file(tmp_path / "absent.toml") == []


def test_reload_picks_up_changes_keeps_state_and_survives_a_bad_file(tmp_path: Path) -> None:
    f = tmp_path / "keys.toml"
    add_to_file(f, make_spec("a", "ka", {}))
    ring = Keyring([], str(f))
    assert ring.enabled and ring.lookup("Bearer kb") is None
    ring.lookup("Bearer ka").state.in_flight = 2  # type: ignore[union-attr]
    add_to_file(f, make_spec("b", "kb", {}))
    assert ring.reload_if_changed()
    assert ring.lookup("Bearer kb") is not None
    assert ring.lookup("Bearer ka").state.in_flight == 2  # type: ignore[union-attr]
    f.write_text(f.read_text() + "\n[[keys]]\nname = 'c'\n")  # no key_sha256
    os.utime(f, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert not ring.reload_if_changed()
    assert ring.lookup("Bearer kb") is not None  # the old keys stay
    assert not ring.reload_if_changed()  # and a bad file is not retried until it changes


def test_lookup_remembers_valid_keys_only_bounded_and_forgets_on_reload(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    f = tmp_path / "keys.toml"
    add_to_file(f, make_spec("a", "ka", {}))
    add_to_file(f, make_spec("b", "kb", {}))
    ring = Keyring([], str(f))
    hashed: list[bytes] = []
    real = keys_mod._sha256
    monkeypatch.setattr(keys_mod, "_sha256", lambda b: hashed.append(b) or real(b))
    a = ring.lookup("Bearer ka")
    assert a is not None and ring.lookup("Bearer ka") is a and hashed == [b"ka"]  # the repeat: no sha256
    assert ring.lookup("Bearer nope") is None and ring.lookup("Bearer nope") is None
    assert hashed == [b"ka", b"nope", b"nope"]  # a wrong key is never remembered
    monkeypatch.setattr(keys_mod, "SEEN_MAX", 1)
    # Full: everything is forgotten, and found again by its hash.
    assert ring.lookup("Bearer kb") is not None and ring.lookup("Bearer ka") is a
    assert len(ring._seen) == 1
    f.write_text("")  # every key removed
    os.utime(f, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert ring.reload_if_changed()
    assert ring.lookup("Bearer ka") is None and ring.lookup("Bearer kb") is None


def test_bucket_refills_over_a_minute_and_tpm_debt() -> None:
    b = Bucket(60)  # one per second
    now = b.stamp
    for _ in range(60):
        assert b.take(1, now) == 0.0
    assert b.take(1, now) == pytest.approx(1.0)
    assert b.take(1, now + 1.0) == 0.0
    t = Bucket(600)  # ten per second
    assert t.check(now) == 0.0
    t.charge(1000, now)  # an answer bigger than the minute's allowance
    assert t.check(now) == pytest.approx(40.1)
    assert t.check(now + 41) == 0.0


def test_local_limits_refuse_with_retry_after() -> None:
    ring = Keyring([spec("a", "ka", max_concurrency=1, rpm=2)])
    limits = Limits()
    limits.attach(ring)
    k = ring.by_name["a"]
    assert limits.admit_local(k) is None
    k.state.in_flight = 1
    r = limits.admit_local(k)
    assert r is not None and r.code == "concurrency_limit"
    k.state.in_flight = 0
    assert limits.admit_local(k) is None
    r = limits.admit_local(k)
    assert r is not None and r.code == "rpm_limit" and r.retry_after == 30


def test_usage_log_replays_on_restart_without_double_counting(tmp_path: Path) -> None:
    path = tmp_path / "usage.jsonl"
    u = Usage(str(path), "r1")
    u.record("id1", "a", "m", 10, 5)
    u.record("id2", "a", "m", 1, 2)
    u.close()
    with open(path, "ab") as f:
        f.write(b'{"ts": 1, "id": "torn", "key": "a"')  # a crash in the middle of a line
    u2 = Usage(str(path), "r2")
    assert u2.totals == {("a", "m"): [2, 11, 7]} and u2.replayed == 2
    u2.record("id3", "b", "m", 3, 4)
    u2.close()
    lines = path.read_text().splitlines()
    assert len(lines) == 3 and all(json.loads(x)["id"] for x in lines)
    u3 = Usage(str(path), "r3")
    assert u3.report()["data"] == [
        {
            "key": "a",
            "model": "m",
            "requests": 2,
            "prompt_tokens": 11,
            "completion_tokens": 7,
            "total_tokens": 18,
        },
        {
            "key": "b",
            "model": "m",
            "requests": 1,
            "prompt_tokens": 3,
            "completion_tokens": 4,
            "total_tokens": 7,
        },
    ]
    assert u3.tokens_per_minute("a") == 0  # replayed lines are totals, not this minute's rate
    u3.record("id4", "a", "m", 100, 20)
    assert u3.tokens_per_minute("a") == 120
    u3.close()
