"""corral's own mock backend: ``python -m corral mock --host H --port P --models a,b``."""

from __future__ import annotations

import sys

from corral.presets.base import LaunchRequest, Preset

DEFAULT_MOCK_MODEL = "mock-model"


class MockPreset(Preset):
    """The mock starts in about a second, so a short start timeout catches a broken one fast."""

    name = "mock"
    default_start_timeout_s = 60.0
    needs_path = False
    busy_metric = "corral_mock_requests_completed_total"

    def base_argv(self, req: LaunchRequest) -> list[str]:
        models = ",".join(self.model_names(req))
        return [
            sys.executable,
            "-m",
            "corral",
            "mock",
            "--host",
            req.host,
            "--port",
            str(req.port),
            "--models",
            models,
        ]

    def model_names(self, req: LaunchRequest) -> list[str]:
        return list(req.models) or [DEFAULT_MOCK_MODEL]
