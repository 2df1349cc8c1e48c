"""Benchmarks that print figures: each runs its variants side by side in one process."""
