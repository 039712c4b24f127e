"""Layers: applying tars to directories safely (plain or overlay format)."""
