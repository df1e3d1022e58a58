"""Experiments that rerun the papers' measurements end to end."""
