"""DETR object detection with image relative position encoding (iRPE) in the encoder.

The public API, imported on first use (``import detr_irpe`` itself loads nothing heavy):

- ``detr_irpe.load_model(source, overrides=(), device="cpu", config=None)``: a model in eval mode
  from a checkpoint file, an http(s) URL, a zoo name or a Hugging Face DETR folder, with its
  post-processor, resolved config and class names (see detr_irpe.hub.loader);
- ``detr_irpe.load_config(path_or_name, overrides)``: a typed config (see detr_irpe.config);
- ``detr_irpe.build_model(cfg)``: (model, criterion, post-processors) of a resolved config.
"""

__version__ = "0.1.0"

#: public name -> module that defines it
_API = {"load_model": "detr_irpe.hub.loader", "load_config": "detr_irpe.config", "build_model": "detr_irpe.models",
        "resolve_config": "detr_irpe.config.resolve", "UserError": "detr_irpe.core.errors"}

__all__ = list(_API)


def __getattr__(name):
    if name in _API:
        import importlib

        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'detr_irpe' has no attribute {name!r}")
