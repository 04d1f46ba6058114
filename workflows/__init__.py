"""Temporal workflow definitions."""
