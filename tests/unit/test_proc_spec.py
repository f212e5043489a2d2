"""ProcessSpec / Probe / RestartPolicy reject bad values instead of clamping them."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from corral.proc import Probe, ProcessSpec, RestartPolicy


def test_defaults_match_kubernetes_and_internals() -> None:
    p = Probe(http="http://127.0.0.1:8100/health")
    assert (p.initial_delay_s, p.period_s, p.timeout_s, p.success_threshold, p.failure_threshold) == (
        0,
        10,
        1,
        1,
        3,
    )
    spec = ProcessSpec(name="x", argv=["true"])
    assert spec.restart == RestartPolicy()
    assert spec.restart.policy == "always" and spec.start_timeout_s == 600 and spec.stop_grace_s == 10


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"http": "http://127.0.0.1:1/", "tcp": "127.0.0.1:1"},
        {"tcp": "127.0.0.1:1", "exec": ["true"]},
        {"http": "127.0.0.1:8100/health"},
        {"tcp": "nohost"},
        {"tcp": "h:99999"},
        {"exec": []},
        {"tcp": "h:1", "period_s": 0},
        {"tcp": "h:1", "initial_delay_s": -1},
        {"tcp": "h:1", "timeout_s": -0.5},
        {"tcp": "h:1", "success_threshold": 0},
        {"tcp": "h:1", "failure_threshold": 0},
        {"tcp": "h:1", "expect_status": 42},
        {"tcp": "h:1", "bogus": 1},
    ],
)
def test_bad_probes_are_rejected(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        Probe(**kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"policy": "sometimes"},
        {"max_restarts": -1},
        {"window_s": 0},
        {"backoff_initial_s": -1},
        {"backoff_factor": 0.5},
        {"backoff_max_s": -2},
        {"stable_after_s": -1},
    ],
)
def test_bad_restart_policies_are_rejected(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        RestartPolicy(**kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"name": "x", "argv": []},
        {"name": "x", "argv": [""]},
        {"name": "", "argv": ["true"]},
        {"name": "x", "argv": ["true"], "ports": [0]},
        {"name": "x", "argv": ["true"], "stop_grace_s": -1},
        {"name": "x", "argv": ["true"], "start_timeout_s": 0},
    ],
)
def test_bad_specs_are_rejected(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        ProcessSpec(**kwargs)


def test_error_names_the_field() -> None:
    with pytest.raises(ValidationError) as exc:
        ProcessSpec(name="x", argv=["true"], restart={"backoff_initial_s": -1})  # type: ignore[arg-type]
    assert "restart.backoff_initial_s" in str(exc.value).replace("\n", ".")


def test_probe_describe() -> None:
    assert Probe(exec=["curl", "-f", "x"]).describe() == "exec curl -f x"
    assert Probe(tcp="127.0.0.1:5432").describe() == "tcp 127.0.0.1:5432"
