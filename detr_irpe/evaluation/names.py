"""The names of evaluation backends and COCO metrics, importable without torch (the command line
and the config validate against them)."""

#: COCO evaluation implementations: faster-coco-eval (the default) and pycocotools (the reference's)
BACKENDS = ("faster_coco_eval", "pycocotools")

#: COCOeval's 12 box metrics, in the order of its ``stats``
METRIC_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")

#: the six average-precision numbers of METRIC_NAMES
AP_NAMES = METRIC_NAMES[:6]
