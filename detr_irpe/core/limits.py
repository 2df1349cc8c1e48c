"""Bounds on sizes that come from a dataset, checked before anything is allocated from them.
Light to import (the config names the pixel limit's default)."""

#: category ids are class indices, so the class head has (largest id + 1) outputs: ids are bounded
#: before a head is allocated from them (LVIS, the largest common vocabulary, has 1203)
MAX_CATEGORY_ID = 99_999
#: image, annotation and category ids are stored as int64 tensors
ID_RANGE = (-(2**63), 2**63 - 1)
#: images with more pixels are refused before they are decoded: PIL's own default
#: (``PIL.Image.MAX_IMAGE_PIXELS``, about 0.25 GB of RGB pixels); data.max_image_pixels changes it
DEFAULT_MAX_IMAGE_PIXELS = 89_478_485
