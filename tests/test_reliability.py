"""What the project promises when things go wrong. Bad input: the tool exits with status 2 and one
line `error: ...` naming the file, field or value, without a traceback, and the output folder is
left as it was; sizes that come from the input are refused before anything is allocated from
them. A bug (any other exception) keeps its traceback and exit status 1. Faults: no checkpoint is
ever lost or half-written, interrupted runs save their state and resume, non-finite losses stop
(or skip) clearly, a dead peer does not hang the others, a full disk is reported and the
previous files stay intact."""

import errno
import hashlib
import json
import multiprocessing
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from engine_helpers import micro, tool_main

from detr_irpe.checkpoint import load_checkpoint, save_checkpoint
from detr_irpe.cli import run_main
from detr_irpe.config import load_config
from detr_irpe.data.synthetic import ensure_synthetic
from detr_irpe.commands.train import main as train_main
from detr_irpe.engine.trainer import NonFiniteLossError, Trainer
from detr_irpe.utils.io import atomic_write_json

evaluate_main = tool_main("evaluate")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("synthetic")


@pytest.fixture(scope="module")
def coco_copy(cache, tmp_path_factory):
    """A writable copy of the micro synthetic dataset to corrupt."""
    src = ensure_synthetic(load_config(None, micro(cache, Path("/unused"))).data.synthetic, progress=False)
    dst = tmp_path_factory.mktemp("coco")
    shutil.copytree(src, dst, dirs_exist_ok=True)
    return dst


def snapshot(folder: Path) -> dict:
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()}


def expect_error(capsys, main, argv, *words, out: Path | None = None):
    """``main(argv)`` through run_main: status 2, last stderr line `error: ...` with ``words``, no
    traceback, and ``out`` unchanged."""
    before = snapshot(out) if out else None
    capsys.readouterr()
    assert run_main(main, argv) == 2
    err = capsys.readouterr().err
    line = err.strip().splitlines()[-1]
    assert line.startswith("error: ") and "Traceback" not in err, err[-2000:]
    for w in words:
        assert w in line, line
    if out is not None:
        assert snapshot(out) == before
    return line


def _dataset_overrides(root: Path, ann: str = "annotations/instances_train.json"):
    return ["data.dataset=coco", f"data.train_images={root / 'train'}", f"data.train_annotations={root / ann}",
            f"data.val_images={root / 'val'}", f"data.val_annotations={root / 'annotations' / 'instances_val.json'}"]


def _existing_run(tmp_path) -> Path:
    """An output folder with something in it that must survive."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("precious")
    return out


# ------------------------------------------------------------------ bad datasets


def _corrupt(coco_copy, tmp_path, edit) -> Path:
    root = tmp_path / "ds"
    shutil.copytree(coco_copy, root)
    data = json.loads((root / "annotations" / "instances_train.json").read_text())
    result = edit(data, root)
    if result != "raw":
        (root / "annotations" / "instances_train.json").write_text(json.dumps(data))
    return root


def _remove_file(d, r):
    (r / "annotations" / "instances_train.json").unlink()
    return "raw"


def _break_json(d, r):
    (r / "annotations" / "instances_train.json").write_text("{not json")
    return "raw"


@pytest.mark.parametrize("case,edit,words", [
    ("missing annotation file", _remove_file, ["instances_train.json", "does not exist"]),
    ("invalid json", _break_json, ["instances_train.json", "JSON"]),
    ("not coco", lambda d, r: d.pop("annotations"), ["instances_train.json", "annotations"]),
    ("unknown image", lambda d, r: d["annotations"][0].update(image_id=99999), ["instances_train.json", "99999"]),
    ("unknown category", lambda d, r: d["annotations"][0].update(category_id=77), ["instances_train.json", "77"]),
    ("category out of range", lambda d, r: d["categories"].append({"id": 500, "name": "x"}) or d["annotations"][0].update(category_id=500),
     ["instances_train.json", "500"]),
    ("file name leaves the folder", lambda d, r: d["images"][0].update(file_name="../../etc/passwd"),
     ["instances_train.json", "../../etc/passwd"]),
    ("absolute file name", lambda d, r: d["images"][0].update(file_name="/etc/passwd"), ["instances_train.json", "/etc/passwd"]),
], ids=lambda x: x if isinstance(x, str) else "")
def test_bad_dataset_files_are_refused_with_one_line(case, edit, words, coco_copy, tmp_path, cache, capsys):
    root = _corrupt(coco_copy, tmp_path, edit)
    out = _existing_run(tmp_path)
    expect_error(capsys, train_main, micro(cache, out) + _dataset_overrides(root) + ["model.num_classes=null"]
                 + (["model.num_classes=100"] if case == "category out of range" else []), *words, out=out)


def test_a_missing_image_fails_before_anything_is_written(coco_copy, tmp_path, cache, capsys):
    root = _corrupt(coco_copy, tmp_path, lambda d, r: None)
    (root / "train" / "000003.png").unlink()
    out = _existing_run(tmp_path)
    expect_error(capsys, train_main, micro(cache, out) + _dataset_overrides(root), "000003.png", "does not exist",
                 "data.invalid_images=skip", out=out)


def test_an_unreadable_image_fails_with_the_file_named_or_is_skipped_and_counted(coco_copy, tmp_path, cache, capsys):
    root = _corrupt(coco_copy, tmp_path, lambda d, r: None)
    (root / "train" / "000004.png").write_bytes(b"\x89PNG truncated")
    # read in a loader worker: the worker's error still reaches the user as one line
    expect_error(capsys, train_main, micro(cache, tmp_path / "fail", "train.max_steps_per_epoch=null",
                                           "data.num_workers=1") + _dataset_overrides(root), "000004.png")
    skip = tmp_path / "skip"
    assert train_main(micro(cache, skip, "train.epochs=1", "train.max_steps_per_epoch=null", "data.invalid_images=skip")
                      + _dataset_overrides(root)) == 0
    assert "skipping image file" in (skip / "train.log").read_text() and "000004.png" in (skip / "train.log").read_text()
    assert json.loads((skip / "log.jsonl").read_text().splitlines()[-1])["skipped_images"] == 1


def test_degenerate_boxes_are_dropped_and_counted_not_an_error(coco_copy, tmp_path, cache):
    def edit(d, r):
        d["annotations"][0]["bbox"] = [5, 5, 0, 10]
        d["annotations"][1]["bbox"] = [5, 5, -3, 10]
        d["annotations"][2]["bbox"] = [5, 5, float("nan"), 10]
    root = _corrupt(coco_copy, tmp_path, edit)
    out = tmp_path / "run"
    assert train_main(micro(cache, out, "train.epochs=1") + _dataset_overrides(root)) == 0
    assert "3 invalid boxes dropped" in (out / "train.log").read_text()


def test_category_ids_up_to_a_billion_are_refused_before_any_allocation(coco_copy, tmp_path, cache, capsys):
    def edit(d, r):
        d["categories"].append({"id": 10**9, "name": "far"})
        d["annotations"][0]["category_id"] = 10**9
    root = _corrupt(coco_copy, tmp_path, edit)
    out = _existing_run(tmp_path)
    expect_error(capsys, train_main, micro(cache, out) + _dataset_overrides(root), "instances_train.json",
                 "category 1000000000", "above the limit of 99999", "renumber the categories", out=out)


def test_a_model_that_cannot_fit_is_refused_up_front_with_the_estimate_and_the_limit(tmp_path, cache, capsys):
    out = _existing_run(tmp_path)
    expect_error(capsys, train_main, micro(cache, out, "model.num_queries=100000000"),
                 "model.num_queries=100000000 cannot fit", "GiB", "of the memory of this machine",
                 "lower model.num_queries", out=out)


def test_an_empty_images_list_is_refused(coco_copy, tmp_path, cache, capsys):
    root = _corrupt(coco_copy, tmp_path, lambda d, r: d.update(images=[], annotations=[]))
    out = _existing_run(tmp_path)
    expect_error(capsys, train_main, micro(cache, out) + _dataset_overrides(root), "no images in",
                 "instances_train.json", out=out)


def test_fewer_images_than_one_batch_are_refused_not_trained_on(tmp_path, cache, capsys):
    out = _existing_run(tmp_path)
    expect_error(capsys, train_main, micro(cache, out, "train.batch_size=64"), "32 images", "train.batch_size=64",
                 "lower train.batch_size", out=out)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_a_cuda_device_without_cuda_is_a_one_line_error(tmp_path, cache, capsys):
    out = _existing_run(tmp_path)
    expect_error(capsys, train_main, micro(cache, out, "train.device=cuda"), "train.device=cuda",
                 "CUDA is not available", out=out)


def test_a_declared_size_other_than_the_stored_one_stops_naming_the_image(coco_copy, tmp_path, cache, capsys):
    def edit(d, r):
        first = min(d["images"], key=lambda i: i["id"])
        first["width"] += 7
        return first["file_name"]
    root = tmp_path / "ds"
    shutil.copytree(coco_copy, root)
    data = json.loads((root / "annotations" / "instances_train.json").read_text())
    name = edit(data, root)
    (root / "annotations" / "instances_train.json").write_text(json.dumps(data))
    expect_error(capsys, train_main, micro(cache, tmp_path / "run", "train.max_steps_per_epoch=null")
                 + _dataset_overrides(root), name, "stored image is", "annotation file declares",
                 "data.invalid_images=skip")


def test_images_above_the_pixel_limit_are_refused_before_anything_is_written(coco_copy, tmp_path, cache, capsys):
    root = _corrupt(coco_copy, tmp_path, lambda d, r: None)
    out = _existing_run(tmp_path)
    expect_error(capsys, train_main, micro(cache, out, "data.max_image_pixels=1000") + _dataset_overrides(root),
                 "as declared in", "instances_train.json", "more than data.max_image_pixels=1000", out=out)


def test_a_file_where_a_folder_is_expected_and_the_reverse_are_one_line_errors(coco_copy, tmp_path, cache, capsys):
    out = _existing_run(tmp_path)
    expect_error(capsys, train_main, ["--config", str(tmp_path)], str(tmp_path), "is a folder, not a YAML file")
    expect_error(capsys, train_main, micro(cache, out, "data.dataset=coco", f"data.train_images={coco_copy / 'train'}",
                                           f"data.train_annotations={coco_copy / 'annotations'}"),
                 "annotations is a folder, not a file", out=out)
    expect_error(capsys, train_main, micro(cache, out, "data.dataset=coco", f"data.train_images={out / 'notes.txt'}",
                                           f"data.train_annotations={coco_copy / 'annotations' / 'instances_train.json'}"),
                 "notes.txt", "is a file, not a folder", out=out)


def test_a_missing_dataset_path_is_named(tmp_path, cache, capsys):
    out = _existing_run(tmp_path)
    expect_error(capsys, train_main, micro(cache, out, "data.dataset=coco", "data.root=/nonexistent/coco"),
                 "/nonexistent/coco", out=out)


# ------------------------------------------------------------------ bad configs


@pytest.mark.parametrize("override,words", [
    ("model.hiden_dim=64", ["unknown key 'model.hiden_dim'", "did you mean 'model.hidden_dim'"]),
    ("train.epochs=ten", ["train.epochs must be an integer", "'ten'"]),
    ("train.lr=-0.001", ["train.lr must be a finite number >= 0", "-0.001"]),
    ("model.num_queries=0", ["model.num_queries must be > 0"]),
    ("model.irpe=rpe-0-product-ctx-1-k", ["model.irpe", "ratio", "rpe-{ratio}-{method}"]),
    ("model.irpe=rpe-2.0-product-bias-1-v", ["bias mode", "values"]),
], ids=["unknown key", "wrong type", "negative lr", "zero queries", "ratio", "bias on values"])
def test_bad_configs_are_refused_with_one_line(override, words, tmp_path, cache, capsys):
    out = _existing_run(tmp_path)
    expect_error(capsys, train_main, micro(cache, out) + [override], *words, out=out)


def test_a_missing_base_file_is_named(tmp_path, capsys):
    cfg = tmp_path / "exp.yaml"
    cfg.write_text("_base_: nowhere.yaml\n")
    expect_error(capsys, train_main, ["--config", str(cfg)], "nowhere.yaml", "does not exist")


# ------------------------------------------------------------------ bad checkpoints


@pytest.fixture(scope="module")
def trained(cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("trained") / "run"
    assert train_main(micro(cache, out, "train.epochs=1")) == 0
    return out


def test_truncated_and_foreign_checkpoints_are_refused(trained, tmp_path, cache, capsys):
    data = (trained / "checkpoint.pth").read_bytes()
    cut = tmp_path / "cut.pth"
    cut.write_bytes(data[: len(data) // 3])
    expect_error(capsys, evaluate_main, ["--checkpoint", str(cut)], "cut.pth", "truncated or not a checkpoint")
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint")
    expect_error(capsys, evaluate_main, ["--checkpoint", str(text)], "notes.pth")
    out = _existing_run(tmp_path)
    expect_error(capsys, train_main, micro(cache, out) + ["--resume", str(cut)], "cut.pth", out=out)


def test_a_checkpoint_of_another_architecture_lists_the_mismatching_keys(trained, tmp_path, cache, capsys):
    out = _existing_run(tmp_path)
    line = expect_error(capsys, train_main, micro(cache, out, "model.hidden_dim=48") + ["--init-from", str(trained / "checkpoint.pth")],
                        "does not match the model architecture", "shape mismatch", out=out)
    assert "checkpoint (" in line and "vs model (" in line


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch /tmp/detr_irpe_reliability_pwned",))


def test_a_checkpoint_that_would_run_code_is_refused_without_running_it(tmp_path, capsys):
    marker = Path("/tmp/detr_irpe_reliability_pwned")
    marker.unlink(missing_ok=True)
    evil = tmp_path / "evil.pth"
    torch.save({"model": {}, "config": {}, "x": _Payload()}, evil)
    expect_error(capsys, evaluate_main, ["--checkpoint", str(evil)], "refused", "nothing was executed", "system")
    assert not marker.exists()


def test_an_unwritable_output_folder_is_refused_before_anything_runs(tmp_path, cache, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    expect_error(capsys, train_main, micro(cache, blocker / "out"), "cannot be written", "not a folder")
    ro = tmp_path / "readonly"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("running as a user who can write read-only folders (root)")
        expect_error(capsys, train_main, micro(cache, ro / "out"), "cannot be written")
    finally:
        ro.chmod(0o700)


# ------------------------------------------------------------------ bugs are not user errors


def _boom(argv=None):
    raise KeyError("boom")


def test_run_main_turns_only_user_errors_into_one_line(capsys):
    from detr_irpe.errors import UserError

    def user_error(argv=None):
        raise UserError("something the user can fix")

    assert run_main(user_error, []) == 2
    assert capsys.readouterr().err == "error: something the user can fix\n"
    with pytest.raises(KeyError, match="boom"):  # a bug keeps its traceback
        run_main(_boom, [])
    for builtin in (ValueError("v"), FileNotFoundError("f"), RuntimeError("r")):  # no longer taken for user errors
        def fail(argv=None, exc=builtin):
            raise exc
        with pytest.raises(type(builtin)):
            run_main(fail, [])


def _run_train(args: list[str], patch: str = "") -> subprocess.CompletedProcess:
    """tools/train.py in a fresh interpreter, after ``patch`` (Python) has run there."""
    code = "\n".join(["import runpy, sys", f"sys.argv = ['tools/train.py', *{args!r}]", patch,
                      "runpy.run_path('tools/train.py', run_name='__main__')"])
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_a_user_error_is_one_line_and_status_2_a_bug_is_a_traceback_and_status_1(tmp_path, cache):
    user = _run_train(micro(cache, tmp_path / "a", "model.num_queries=0"))
    assert user.returncode == 2 and "Traceback" not in user.stderr, user.stderr[-2000:]
    last = user.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "model.num_queries must be > 0" in last
    bug = _run_train(micro(cache, tmp_path / "b"), patch="\n".join([
        "import detr_irpe.data.build as build",
        "def build_dataset(*args, **kwargs):",
        "    raise KeyError('a bug in the loader')",
        "build.build_dataset = build_dataset"]))
    assert bug.returncode == 1, bug.stderr[-2000:]
    assert "Traceback (most recent call last)" in bug.stderr and "KeyError: 'a bug in the loader'" in bug.stderr
    assert not any(line.startswith("error: ") for line in bug.stderr.splitlines())


# ------------------------------------------------------------------ faults


def _writer(path, start):
    i = start
    while True:
        save_checkpoint({"model": {"w": torch.full((1_000_000,), float(i))}, "i": i}, path)
        i += 1


def test_checkpoints_survive_being_killed_mid_write_many_times(tmp_path):
    path = tmp_path / "checkpoint.pth"
    ctx = multiprocessing.get_context("fork")  # no re-import of torch per writer
    rng = random.Random(0)
    last = -1
    for attempt in range(25):
        proc = ctx.Process(target=_writer, args=(path, (last + 1) * 1000))
        proc.start()
        deadline = time.time() + 30
        while not path.exists() and time.time() < deadline:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.25))
        os.kill(proc.pid, signal.SIGKILL)
        proc.join()
        ckpt = load_checkpoint(path)  # always a whole checkpoint, never a torn one
        w = ckpt["model"]["w"]
        assert torch.equal(w, torch.full_like(w, float(ckpt["i"])))
        last = ckpt["i"] // 1000
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "checkpoint.pth"]
    assert all(n.startswith(".checkpoint.pth.") for n in leftovers)  # only temporaries of killed writers


def test_sigterm_saves_the_state_and_resume_auto_continues(tmp_path, cache):
    out = tmp_path / "run"
    args = micro(cache, out, "train.epochs=30", "train.max_steps_per_epoch=null", "train.eval_every=1000")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, str(ROOT / "tools" / "train.py"), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)
    for line in proc.stdout:
        if re.search(r"epoch 2\b.* step 1/", line):
            proc.send_signal(signal.SIGTERM)
            break
    rest = proc.communicate(timeout=120)[0]
    assert proc.returncode == 3, rest[-2000:]
    assert "state saved to" in rest and (out / "checkpoint_interrupted.pth").is_file()
    state = load_checkpoint(out / "checkpoint_interrupted.pth")
    assert state["epoch"] == 1 and state["step_in_epoch"] >= 1
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "train.py"), *args, "train.epochs=3", "--resume", "auto"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert [json.loads(x)["epoch"] for x in (out / "log.jsonl").read_text().splitlines()] == [1, 2, 3]


def _nan_after(trainer, n):
    real = trainer.criterion.forward
    calls = {"n": 0}

    def forward(outputs, targets):
        losses = real(outputs, targets)
        calls["n"] += 1
        if calls["n"] == n:
            losses["loss_bbox"] = losses["loss_bbox"] * float("nan")
        return losses

    trainer.criterion.forward = forward


def test_a_non_finite_loss_stops_with_the_step_and_terms_named_after_saving_the_state(tmp_path, cache):
    out = tmp_path / "run"
    trainer = Trainer(load_config(None, micro(cache, out)))
    _nan_after(trainer, 2)
    with pytest.raises(NonFiniteLossError, match=r"epoch 1, step 2 \(update 1\): loss_bbox=nan.*checkpoint_nonfinite.pth"):
        trainer.train()
    state = load_checkpoint(out / "checkpoint_nonfinite.pth")
    assert state["epoch"] == 0 and state["step_in_epoch"] == 1
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_on_nonfinite_skip_skips_the_step_and_counts_it(tmp_path, cache):
    out = tmp_path / "run"
    trainer = Trainer(load_config(None, micro(cache, out, "train.on_nonfinite=skip")))
    _nan_after(trainer, 2)
    trainer.train()
    log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert log[-1]["skipped_steps"] == 1 and log[-1]["updates"] == 5


def test_disk_full_while_checkpointing_is_reported_and_the_previous_checkpoint_is_intact(tmp_path, cache, monkeypatch, capsys):
    out = tmp_path / "run"
    assert train_main(micro(cache, out, "train.epochs=1")) == 0
    before = (out / "checkpoint.pth").read_bytes()
    real_save = torch.save

    def full_disk(obj, f, *a, **k):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    line = expect_error(capsys, train_main, micro(cache, out, "train.epochs=2") + ["--resume", "auto"],
                        "no space left on the device while writing", "checkpoint.pth", "previous file is intact")
    monkeypatch.setattr(torch, "save", real_save)
    assert (out / "checkpoint.pth").read_bytes() == before
    assert load_checkpoint(out / "checkpoint.pth")["epoch"] == 1
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    del line


def _peer_death(rank, overrides, result):
    from detr_irpe.engine.hooks import Hook, default_hooks

    class Die(Hook):
        def after_step(self, trainer, scalars):
            if rank == 1 and trainer.progress.update == 2:
                os._exit(1)

    # the launcher terminates the survivor once it sees the peer die: the survivor must still
    # report how it failed (the trainer's own SIGTERM handler covers training only)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    start = time.time()
    try:
        trainer = Trainer(load_config(None, overrides))
        trainer.hooks = default_hooks(trainer) + [Die()]
        trainer.train()
        outcome = "finished"
    except Exception as exc:  # the survivor must fail, not hang
        outcome = f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
    atomic_write_json(result / f"rank{rank}.json", {"outcome": outcome, "seconds": time.time() - start})


def test_a_dead_peer_makes_the_others_fail_within_the_timeout(tmp_path, cache):
    from test_distributed import _run

    overrides = micro(cache, tmp_path / "run", "train.dist_timeout_s=20", "train.epochs=3")
    _run(2, _peer_death, overrides, tmp_path, timeout=150, allow_failure=True)
    survivor = json.loads((tmp_path / "rank0.json").read_text())
    assert survivor["seconds"] < 120, survivor
    # the survivor fails with gloo's lost-peer or timeout error from the process group, not another error
    assert re.match(r"(RuntimeError|DistBackendError|DistNetworkError): .*gloo.*"
                    r"(Connection (reset|closed) by peer|[Tt]imed out|timeout)", survivor["outcome"]), survivor
    assert not (tmp_path / "rank1.json").exists()
