"""Evaluation: the loop that runs a model over a validation loader (loop.py), the COCO evaluator
with a distributed gather (evaluator.py), COCOeval's box metrics (metrics.py) on one of two
backends (backends.py), detections as COCO results (results.py), the metrics file and tables
(metrics_report.py), and the names of backends and metrics (names.py)."""
