"""Evaluation: the loop that runs a model over a validation loader (loop.py), COCO box AP with a
distributed gather (coco.py), and the names of backends and metrics (names.py)."""
