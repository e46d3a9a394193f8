"""Worked examples of extending smgate (see examples/README.md)."""
