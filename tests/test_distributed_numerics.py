"""Multi-process numerics: two gloo processes holding half a batch each compute the loss and the
gradients of one process on the whole batch (the box-loss normaliser averages the box count over
processes, and DDP averages the gradients)."""

import pytest
import torch
from distributed_helpers import run_processes
from engine_helpers import micro

TIMEOUT = "train.dist_timeout_s=60"


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("synthetic")


#: boxes per image: 3 + 1 on rank 0's half and 2 + 2 on rank 1's, so the halves hold the same count
#: (the classification loss is a weighted mean per process; with equal counts it averages exactly)
BOXES = (3, 1, 2, 2)
NUMERICS = ["model.dropout=0.0", "model.backbone.norm=gn", "model.aux_loss=true"]


def _batch():
    g = torch.Generator().manual_seed(0)
    images = torch.rand(len(BOXES), 3, 64, 64, generator=g)
    mask = torch.zeros(len(BOXES), 64, 64, dtype=torch.bool)
    targets = []
    for n in BOXES:
        centre = 0.25 + 0.5 * torch.rand(n, 2, generator=g)
        size = 0.1 + 0.3 * torch.rand(n, 2, generator=g)
        targets.append({"labels": torch.randint(0, 4, (n,), generator=g), "boxes": torch.cat([centre, size], 1)})
    return images, mask, targets


def _one_step(trainer, images, mask, targets):
    """The step's loss and gradients as the training loop computes them (without the update)."""
    from detr_irpe.core.runtime import agree, mean_over_processes
    from detr_irpe.models.criterion import box_count, boxes_per_process

    votes = agree({"stop": False}, number=box_count(targets))
    losses, loss = trainer.forward_backward(images, mask, targets, boxes_per_process(votes.total, trainer.dist.world_size))
    mean = mean_over_processes({"loss": loss.detach()})["loss"]  # what the epoch record reports
    grads = {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}
    return float(mean), grads


def _half_batch(rank, overrides, result):
    from detr_irpe.config import load_config
    from detr_irpe.core.runtime import cleanup
    from detr_irpe.engine.trainer import Trainer

    torch.manual_seed(0)
    trainer = Trainer(load_config(None, overrides))
    images, mask, targets = _batch()
    half = slice(2 * rank, 2 * rank + 2)
    loss, grads = _one_step(trainer, images[half], mask[half], targets[half])
    torch.save({"loss": loss, "grads": grads}, result / f"rank{rank}.pt")
    cleanup()


def test_two_processes_on_half_a_batch_each_give_the_loss_and_gradients_of_one_on_the_whole(tmp_path, cache):
    from detr_irpe.config import load_config
    from detr_irpe.engine.trainer import Trainer

    overrides = micro(cache, tmp_path / "ddp", TIMEOUT, "train.batch_size=2", *NUMERICS)
    run_processes(2, _half_batch, overrides, tmp_path, timeout=120)
    torch.manual_seed(0)
    single = Trainer(load_config(None, micro(cache, tmp_path / "one", "train.batch_size=4", *NUMERICS)))
    loss, grads = _one_step(single, *_batch())
    ddp = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    assert ddp[0]["loss"] == pytest.approx(loss, rel=1e-5) and ddp[1]["loss"] == pytest.approx(loss, rel=1e-5)
    assert grads.keys() == ddp[0]["grads"].keys()
    for name, g in grads.items():
        # DDP leaves the mean of the processes' gradients on every process
        torch.testing.assert_close(ddp[0]["grads"][name], g, rtol=1e-4, atol=1e-6, msg=name)
        torch.testing.assert_close(ddp[1]["grads"][name], g, rtol=1e-4, atol=1e-6, msg=name)
