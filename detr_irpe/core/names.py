"""The names every layer shares: the choices of the config and the command line, and the metric
names. Importable without torch (``--help`` and the config validate against them)."""

#: COCO evaluation implementations: faster-coco-eval (the default) and pycocotools (the reference's)
BACKENDS = ("faster_coco_eval", "pycocotools")

#: COCOeval's 12 box metrics, in the order of its ``stats``
METRIC_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")

#: the six average-precision numbers of METRIC_NAMES
AP_NAMES = METRIC_NAMES[:6]

#: Which kernel runs the attention: "auto" picks per call, "plain" forces ordinary autograd ops,
#: "fused" the iRPE autograd Function, "sdpa" PyTorch's scaled_dot_product_attention, "flex"
#: torch's flex_attention with the iRPE terms as a score modification (see detr_irpe.models.attention)
KERNELS = ("auto", "plain", "fused", "sdpa", "flex")
#: the kernels that cannot apply iRPE on values
NO_VALUE_TERM = ("sdpa", "flex")

#: model.decoder: the decoder family around the same encoder (DETR's, Conditional DETR's, DAB-DETR's)
DECODERS = ("detr", "conditional", "dab")
#: the decoders that classify with sigmoid logits and a focal loss (no no-object logit), keeping the
#: top-k (query, class) pairs at inference
SIGMOID_DECODERS = ("conditional", "dab")
#: model.activation: the feed-forward activation (DAB-DETR's is PReLU)
ACTIVATIONS = ("relu", "prelu")

BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101", "cnn_tiny")
NORMS = ("frozen_bn", "bn", "gn")
POSITION_EMBEDDINGS = ("sine", "learned", "none")

#: data.dataset: a COCO-format folder or the built-in synthetic dataset
DATASETS = ("coco", "synthetic")
#: data.invalid_images: an unreadable or missing image stops the run (naming the file) or is skipped
INVALID_IMAGE_MODES = ("fail", "skip")

#: train.amp: automatic mixed precision on CUDA
AMP_MODES = ("none", "bf16", "fp16")
#: train.on_nonfinite: a non-finite loss stops the run (after saving) or skips the step
NONFINITE_MODES = ("stop", "skip")
#: the optional metric writers of train.writers (see detr_irpe.engine.writers)
WRITERS = ("tensorboard", "wandb", "mlflow")

#: the numeric precisions the training-step benchmark compares
PRECISIONS = ("fp32", "tf32", "bf16")
