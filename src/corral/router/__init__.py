"""corral.router."""
