"""The model zoo: the released DETR, iRPE-DETR, Conditional DETR and DAB-DETR models (COCO val2017
box AP as published), where their files are, and the config values that define their architecture.

Conditional DETR's and DAB-DETR's files are on cloud drives (share pages, no direct file address):
they are downloaded by hand from the entry's ``page`` and read from the torch hub cache under
``file_name``, or given by path."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import SourceError

DETR_URL = "https://dl.fbaipublicfiles.com/detr/"
IRPE_URL = "https://github.com/wkcn/iRPE-model-zoo/releases/download/1.0/"
#: the share pages of the family's releases (their READMEs' model tables)
CONDITIONAL_PAGE = "https://github.com/Atten4Vis/ConditionalDETR#model-zoo"
DAB_PAGE = "https://drive.google.com/drive/folders/1ByfbyCZL8o6zOKqH6dQFCsVQ8dgRXfUU"

#: what every released model shares: COCO's 91 class ids, 8 heads, the sine encoding in the
#: encoder and decoder, auxiliary decoder outputs (the values the weights themselves do not tell)
_COMMON = ("model.num_classes=91", "model.nheads=8", "model.position_embedding=sine", "model.encoder_abs_pos=true",
           "model.aux_loss=true")

ZOO_COLUMNS = ("name", "AP", "epochs", "architecture", "evaluate")


@dataclass(frozen=True)
class ZooEntry:
    """One released model; ``url`` None: a file downloaded by hand from ``page``."""

    name: str
    url: str | None
    file_name: str
    #: the start of the file's sha256 (the DETR files carry it in their names), or None
    sha256: str | None
    #: key=value overrides that define its architecture
    overrides: tuple[str, ...]
    #: published COCO val2017 box AP
    ap: float
    epochs: int
    description: str
    page: str | None = None

    def setting(self, key: str) -> str | None:
        """The value (as written) that ``overrides`` give ``key``, or None."""
        values = dict(item.split("=", 1) for item in self.overrides)
        return values.get(key)

    @property
    def architecture(self) -> str:
        """A short description: backbone, DC5, iRPE, e.g. ``R50-DC5`` or ``R50 + rpe-2.0-product-ctx-1-k``."""
        text = {"resnet50": "R50", "resnet101": "R101"}[self.setting("model.backbone.name")]
        if self.setting("model.backbone.dilation") == "true":
            text += "-DC5"
        decoder = {"conditional": "Conditional ", "dab": "DAB "}.get(self.setting("model.decoder"), "")
        patterns = self.setting("model.num_patterns")
        text = decoder + text + (f", {patterns} patterns" if patterns not in (None, "0") else "")
        if self.setting("model.random_refpoints_xy") == "true":
            text += ", random xy"
        irpe = self.setting("model.irpe")
        return f"{text} + {irpe}" if irpe not in (None, "null") else text

    @property
    def evaluate_command(self) -> str:
        """The command line that evaluates it on COCO val2017."""
        return f"detr-irpe evaluate --checkpoint {self.name} data.dataset=coco data.root=/data/coco"


def _detr(name: str, file_name: str, sha256: str, backbone: str, dilation: bool, ap: float,
          description: str) -> ZooEntry:
    return ZooEntry(
        name=name, url=DETR_URL + file_name, file_name=file_name, sha256=sha256,
        overrides=(f"model.backbone.name={backbone}", f"model.backbone.dilation={str(dilation).lower()}",
                   "model.irpe=null", *_COMMON),
        ap=ap, epochs=500, description=description)


def _irpe(name: str, irpe: str, file_name: str, epochs: int, ap: float, description: str) -> ZooEntry:
    return ZooEntry(
        name=name, url=IRPE_URL + file_name, file_name=file_name, sha256=None,
        overrides=("model.backbone.name=resnet50", "model.backbone.dilation=false", f"model.irpe={irpe}", *_COMMON),
        ap=ap, epochs=epochs, description=description)


def _conditional(name: str, file_name: str, backbone: str, dilation: bool, ap: float) -> ZooEntry:
    return ZooEntry(
        name=name, url=None, file_name=file_name, sha256=None, page=CONDITIONAL_PAGE,
        overrides=("model.decoder=conditional", f"model.backbone.name={backbone}",
                   f"model.backbone.dilation={str(dilation).lower()}", "model.irpe=null", "model.num_select=100",
                   *_COMMON),
        ap=ap, epochs=50, description=f"Conditional DETR, {name.split('-', 2)[2].upper()}, 50 epochs")


def _dab(name: str, file_name: str, dilation: bool, ap: float, patterns: int = 0, fixed_xy: bool = False) -> ZooEntry:
    return ZooEntry(
        name=name, url=None, file_name=file_name, sha256=None, page=DAB_PAGE,
        overrides=("model.decoder=dab", "model.backbone.name=resnet50", f"model.backbone.dilation={str(dilation).lower()}",
                   "model.irpe=null", "model.activation=prelu", "model.pe_temperature=20", "model.num_select=300",
                   f"model.num_patterns={patterns}", f"model.random_refpoints_xy={str(fixed_xy).lower()}", *_COMMON),
        ap=ap, epochs=50, description=f"DAB-DETR, {name.split('-', 2)[2].upper()}, 50 epochs")


ZOO: dict[str, ZooEntry] = {e.name: e for e in (
    _detr("detr-r50", "detr-r50-e632da11.pth", "e632da11", "resnet50", False, 42.0, "DETR, ResNet-50, 500 epochs"),
    _detr("detr-r50-dc5", "detr-r50-dc5-f0fb7ef5.pth", "f0fb7ef5", "resnet50", True, 43.3,
          "DETR, ResNet-50 with a dilated last stage (stride 16), 500 epochs"),
    _detr("detr-r101", "detr-r101-2c7b67e5.pth", "2c7b67e5", "resnet101", False, 43.5, "DETR, ResNet-101, 500 epochs"),
    _detr("detr-r101-dc5", "detr-r101-dc5-a2e86def.pth", "a2e86def", "resnet101", True, 44.9,
          "DETR, ResNet-101 with a dilated last stage (stride 16), 500 epochs"),
    _irpe("irpe-detr-r50-7x7-150e", "rpe-1.9-product-ctx-1-k", "rpe-1.9-product-ctx-1-k.pth", 150, 40.9,
          "DETR-R50 with iRPE on keys (product method, 7x7 buckets, contextual, shared), 150 epochs"),
    _irpe("irpe-detr-r50-9x9-150e", "rpe-2.0-product-ctx-1-k", "rpe-2.0-product-ctx-1-k.pth", 150, 41.0,
          "DETR-R50 with iRPE on keys (product method, 9x9 buckets, contextual, shared), 150 epochs"),
    _irpe("irpe-detr-r50-9x9-300e", "rpe-2.0-product-ctx-1-k", "rpe-2.0-product-ctx-1-k_300epochs.pth", 300, 42.2,
          "DETR-R50 with iRPE on keys (product method, 9x9 buckets, contextual, shared), 300 epochs"),
    _conditional("conditional-detr-r50", "ConditionalDETR_r50_epoch50.pth", "resnet50", False, 41.0),
    _conditional("conditional-detr-r50-dc5", "ConditionalDETR_r50dc5_epoch50.pth", "resnet50", True, 43.7),
    _conditional("conditional-detr-r101", "ConditionalDETR_r101_epoch50.pth", "resnet101", False, 42.8),
    _conditional("conditional-detr-r101-dc5", "ConditionalDETR_r101dc5_epoch50.pth", "resnet101", True, 45.0),
    _dab("dab-detr-r50", "dab_detr_r50.pth", False, 42.2),
    _dab("dab-detr-r50-3pat", "dab_detr_r50_3pat.pth", False, 42.6, patterns=3),
    _dab("dab-detr-r50-dc5", "dab_detr_r50_dc5.pth", True, 44.5),
    _dab("dab-detr-r50-dc5-fixxy", "dab_detr_r50_dc5_fixxy.pth", True, 44.7, fixed_xy=True),
    _dab("dab-detr-r50-dc5-3pat", "dab_detr_r50_dc5_3pat.pth", True, 45.7, patterns=3),
)}


def manual_file(entry: ZooEntry) -> Path:
    """The file of an entry downloaded by hand: the torch hub cache's ``checkpoints/<file_name>``;
    a SourceError saying where to get it when it is not there."""
    import torch

    path = Path(torch.hub.get_dir()) / "checkpoints" / entry.file_name
    if not path.is_file():
        raise SourceError(f"zoo model {entry.name} is on a cloud drive, which gives no direct file address: download "
                          f"its checkpoint ({entry.description}) from {entry.page} by hand and put it at {path}, or "
                          f"give the file's path as the model source")
    return path


def zoo_entry(name: str) -> ZooEntry:
    """The zoo entry called ``name`` (case does not matter)."""
    entry = ZOO.get(name.strip().lower())
    if entry is None:
        near = difflib.get_close_matches(name.strip().lower(), list(ZOO), n=1)
        hint = f" (did you mean '{near[0]}'?)" if near else ""
        raise SourceError(f"unknown model-zoo name {name!r}{hint}; known: {', '.join(ZOO)}")
    return entry


def zoo_table() -> list[tuple[str, ...]]:
    """One row of strings per entry, in the order of :data:`ZOO_COLUMNS`."""
    return [(e.name, f"{e.ap:.1f}", str(e.epochs), e.architecture, e.evaluate_command) for e in ZOO.values()]


def format_zoo_table() -> str:
    """The zoo as an aligned plain-text table with a header line."""
    rows = [ZOO_COLUMNS, *zoo_table()]
    widths = [max(len(row[i]) for row in rows) for i in range(len(ZOO_COLUMNS) - 1)]
    return "\n".join("  ".join([*(cell.ljust(w) for cell, w in zip(row, widths)), row[-1]]) for row in rows)
