"""Two gloo processes on this machine: DDP training ends with identical weights on both ranks,
and evaluation at world size 2 gives the same AP as at world size 1."""

import json

import torch
from distributed_helpers import run_processes
from engine_helpers import micro, same_weights, tool_main


def _train(rank, overrides, out):
    from detr_irpe.config import load_config
    from detr_irpe.core.runtime import cleanup
    from detr_irpe.engine.trainer import Trainer

    trainer = Trainer(load_config(None, overrides))
    trainer.train()
    torch.save(trainer.model.state_dict(), out / f"rank{rank}.pt")
    cleanup()


def _evaluate(rank, checkpoint, out):
    evaluate_main = tool_main("evaluate")
    assert evaluate_main(["--checkpoint", str(checkpoint), "--output-dir", str(out)]) == 0


def test_two_process_training_keeps_ranks_identical_and_evaluation_is_world_size_invariant(tmp_path):
    cache = tmp_path / "cache"
    out = tmp_path / "ddp"
    # 7 validation images: the distributed sampler pads rank 1 with a repeat that must count once
    overrides = micro(cache, out, "data.synthetic.num_val=7", "eval.batch_size=2")
    run_processes(2, _train, overrides, out)
    w0, w1 = torch.load(out / "rank0.pt"), torch.load(out / "rank1.pt")
    # every parameter is identical; batch-norm running statistics are per process on the CPU
    # (SyncBatchNorm, used on GPUs, needs CUDA)
    stats = ("running_mean", "running_var", "num_batches_tracked")
    params = lambda w: {k: v for k, v in w.items() if not k.endswith(stats)}
    assert same_weights(params(w0), params(w1))
    assert not same_weights(w0, w1)  # the statistics do differ: the ranks saw different images
    log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert log[-1]["world_size"] == 2 and log[-1]["train_images"] == 3 * 4 * 2

    ckpt = out / "checkpoint.pth"
    run_processes(2, _evaluate, ckpt, tmp_path / "ev2")
    evaluate_main = tool_main("evaluate")
    assert evaluate_main(["--checkpoint", str(ckpt), "--output-dir", str(tmp_path / "ev1")]) == 0
    m2 = json.loads((tmp_path / "ev2" / "metrics.json").read_text())
    m1 = json.loads((tmp_path / "ev1" / "metrics.json").read_text())
    assert m2["world_size"] == 2 and m1["world_size"] == 1 and m1["images"] == 7
    for key in ("AP", "AP50", "AP75", "AR100"):
        assert m2["metrics"][key] == m1["metrics"][key], key
    r1 = json.loads((tmp_path / "ev1" / "results.json").read_text())
    r2 = json.loads((tmp_path / "ev2" / "results.json").read_text())
    assert len(r1) == len(r2) == 7 * 5  # each image's detections exactly once
