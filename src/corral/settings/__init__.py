"""One pydantic model per concept, shared by the config file, the launcher and the sitter.

- :class:`Probe` — a health probe (Kubernetes semantics): ``[[service]] health`` tables, the
  launcher's and the sitter's supervision.
- :class:`RestartPolicy` — when to restart and when to give up.
- :class:`GenerationProbe` — the sitter's scheduled 1-token completion (``[[backend]]
  generation_probe``, part of :class:`SitterSettings`).
- :class:`SitterSettings` — everything one sitter is told: the launcher writes it to a private
  file (``corral sit --settings FILE``), and ``corral sit``'s flags are derived from its fields.

Each model validates once, with field-level messages; nobody copies its fields by hand. Plain
data: this package imports nothing from the rest of corral at import time.

The names below are imported on first use (PEP 562): the router imports one small submodule
(``corral.settings.urls``) and need not build the sitter's models with it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from corral.lazy import lazy_exports

if TYPE_CHECKING:
    from corral.settings.generation_probe import GenerationProbe
    from corral.settings.probe import Probe
    from corral.settings.restart import RestartPolicy
    from corral.settings.sitter import SitterSettings

_WHERE = {
    "GenerationProbe": "corral.settings.generation_probe",
    "Probe": "corral.settings.probe",
    "RestartPolicy": "corral.settings.restart",
    "SitterSettings": "corral.settings.sitter",
}


__getattr__ = lazy_exports(__name__, _WHERE)


__all__ = ["GenerationProbe", "Probe", "RestartPolicy", "SitterSettings"]
