"""corral.mock."""
