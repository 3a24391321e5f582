"""Reusable widgets of the curator TUI."""
