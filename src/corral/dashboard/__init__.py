"""corral.dashboard."""
