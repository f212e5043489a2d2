"""The dashboard: static files (vanilla JS, no build step) served by the launcher at ``/``.

The launcher mounts them with
``app.mount("/", StaticFiles(directory=static_dir(), html=True), name="dashboard")`` after its
``/api`` routes; the page talks only to the launcher's control API under ``/api``.
"""

from __future__ import annotations

from pathlib import Path

STATIC_DIR = Path(__file__).resolve().parent / "static"


def static_dir() -> Path:
    """The directory holding ``index.html``, ``app.js`` and ``app.css``."""
    return STATIC_DIR
