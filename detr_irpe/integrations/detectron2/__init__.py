"""DETR-iRPE as a detectron2 model: the ``DetrIrpe`` meta-architecture, its config keys
(``MODEL.DETR_IRPE``), data mapping, optimizer, trainer and a checkpoint bridge.

detectron2 is optional for this project: importing this package without it raises an ImportError
that says how to install it (see docs/detectron2.md).
"""

INSTALL_HINT = ("pip install --no-build-isolation 'git+https://github.com/facebookresearch/detectron2.git' "
                "'setuptools<81'")

try:
    import detectron2  # noqa: F401
except ImportError as exc:
    raise ImportError(f"detr_irpe.integrations.detectron2 needs detectron2, which could not be imported ({exc}); "
                      f"it is not on PyPI: with torch installed, run {INSTALL_HINT} (see docs/detectron2.md)") from exc

from .checkpoint_bridge import to_d2, to_project  # noqa: E402
from .checkpointer import DetrIrpeCheckpointer  # noqa: E402
from .class_map import ClassMap  # noqa: E402
from .config import add_detr_irpe_config, detr_config_from_cfg  # noqa: E402
from .data import build_mapper, register_synthetic  # noqa: E402
from .meta_arch import DetrIrpe  # noqa: E402  (importing it registers the meta-architecture)
from .solver import build_optimizer  # noqa: E402
from .trainer import DetrIrpeTrainer  # noqa: E402

__all__ = ["INSTALL_HINT", "ClassMap", "DetrIrpe", "DetrIrpeCheckpointer", "DetrIrpeTrainer", "add_detr_irpe_config",
           "build_mapper", "build_optimizer", "detr_config_from_cfg", "register_synthetic", "to_d2", "to_project"]
