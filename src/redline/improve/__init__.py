"""Iterative improvement of responses: revise (critic), improve (PIT), refine (Self-Refine)."""
