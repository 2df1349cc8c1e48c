"""Weights to start a run from (fine-tuning): a class head of another size is re-initialised."""

from __future__ import annotations

import logging

from ..hub.checkpoint import load_state_dict

log = logging.getLogger(__name__)


def load_initial_weights(model, source: str) -> None:
    """Load the weights of ``source`` (a file, URL, zoo name or Hugging Face folder) into
    ``model``, keeping the model's own class head where the two heads differ in size."""
    from ..hub.loader import open_source

    state = dict(open_source(source).state)
    own = model.state_dict()
    head = [k for k in ("class_embed.weight", "class_embed.bias") if k in state and k in own]
    if head and state[head[0]].shape != own[head[0]].shape:
        log.warning("init-from %s: class head has %d outputs there and %d here; re-initialising the class head",
                    source, state[head[0]].shape[0], own[head[0]].shape[0])
        for k in head:
            state.pop(k)
        state.update({k: own[k] for k in head})
    load_state_dict(model, state, source=f"init-from checkpoint {source}")
    log.info("initialised weights from %s", source)
