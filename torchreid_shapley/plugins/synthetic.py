"""Synthetic ReID datasets (being written)."""
