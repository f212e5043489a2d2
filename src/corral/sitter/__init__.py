"""corral.sitter."""
