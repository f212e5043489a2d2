"""corral.launcher."""
