"""corral.proc."""
