"""The error report: the JSON holds every model (undefined metrics as null) and the figures are
real images."""

import json

import numpy as np
from error_cases import DETS, GT
from PIL import Image

from detr_irpe.analysis.error_report import FIGURES, analyse, to_json, write_figures


def test_report_and_figures_hold_every_model(tmp_path):
    analyses = [analyse("one", GT, DETS), analyse("two", GT, DETS[:3])]
    data = json.loads(json.dumps(to_json(analyses)))
    assert list(data) == ["one", "two"]
    assert data["two"]["errors"]["counts"]["missed"] == 2 and data["one"]["per_class"][0]["APl"] is None
    for path in write_figures(analyses, tmp_path):
        assert path.name in FIGURES
        with Image.open(path) as im:
            assert len(np.unique(np.asarray(im.convert("L")))) > 10
