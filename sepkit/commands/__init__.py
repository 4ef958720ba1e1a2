"""Subcommands of the sepkit command line (one module each)."""
