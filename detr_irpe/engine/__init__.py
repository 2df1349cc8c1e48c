"""Training and evaluation engine: distributed set-up, optimisation, the trainer and its hooks."""
