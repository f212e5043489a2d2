"""Fixtures shared by the integration tests."""

from launcher_helpers import stacks

__all__ = ["stacks"]
