"""``python -m detr_irpe COMMAND ...`` (also under torchrun: ``torchrun ... -m detr_irpe train ...``)."""

import sys

from .commands import main

sys.exit(main())
