"""corral.router.policies."""
