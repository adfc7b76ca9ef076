"""Command-line entry point of the project (a thin dispatcher; see icl_kernel.cli)."""
