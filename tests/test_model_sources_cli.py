"""Every model source through ``detr-irpe evaluate``: this project's checkpoint, a reference-code
checkpoint, weights only (the architecture read from the weights), an http(s) URL served on
127.0.0.1, a zoo name; and the one-line errors of bad sources."""

import argparse
import functools
import http.server
import json
import threading
from pathlib import Path

import pytest
import torch
import yaml

from detr_irpe.hub.checkpoint import save_checkpoint
from detr_irpe.commands.cli import run_main
from detr_irpe.hub import zoo
from engine_helpers import micro_checkpoints, tool_main

evaluate_main = tool_main("evaluate")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return micro_checkpoints(tmp_path_factory.mktemp("sources"),
                             {"abs": ("", 0, ()), "irpe": ("rpe-2.0-product-ctx-1-k", 1, ())})


def data_overrides(env) -> list[str]:
    """The micro dataset the checkpoints were made for (a weights-only file does not carry it)."""
    cfg = torch.load(env["ckpt"]["abs"], weights_only=True)["config"]
    syn = cfg["data"]["synthetic"]
    return [f"data.synthetic.cache_dir={syn['cache_dir']}", f"data.synthetic.num_train={syn['num_train']}",
            f"data.synthetic.num_val={syn['num_val']}", "data.synthetic.image_size=[64,80]",
            "data.synthetic.max_objects=2", "data.val_size=64", "data.max_size=96", "data.size_divisibility=32",
            "data.num_workers=0", "eval.batch_size=4"]


def evaluate(source, out: Path, *extra) -> tuple[int, list]:
    status = run_main(evaluate_main, ["--checkpoint", str(source), "--output-dir", str(out), *map(str, extra)])
    results = json.loads((out / "results.json").read_text()) if status == 0 else []
    return status, results


def weights_only(env, name: str, tmp_path: Path) -> Path:
    path = tmp_path / f"{name}-weights.pth"
    save_checkpoint({"model": torch.load(env["ckpt"][name], weights_only=True)["model"]}, path)
    return path


def config_file(env, name: str, tmp_path: Path) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(torch.load(env["ckpt"][name], weights_only=True)["config"]))
    return path


def same_detections(a: list, b: list) -> bool:
    key = lambda d: (d["image_id"], d["category_id"], d["score"])  # noqa: E731
    return len(a) == len(b) > 0 and all(
        x["image_id"] == y["image_id"] and x["category_id"] == y["category_id"]
        and abs(x["score"] - y["score"]) < 1e-6 and max(abs(p - q) for p, q in zip(x["bbox"], y["bbox"])) < 1e-4
        for x, y in zip(sorted(a, key=key), sorted(b, key=key)))


@pytest.mark.parametrize("name, untold", [
    ("abs", ["model.backbone.dilation=true", "model.nheads=4"]),  # neither is in the weights of an abs-only model
    ("irpe", ["model.backbone.dilation=true"]),  # the iRPE tables tell the head count
])
def test_weights_only_evaluates_without_a_config_like_the_explicit_config(env, tmp_path, name, untold):
    weights = weights_only(env, name, tmp_path)
    status, inferred = evaluate(weights, tmp_path / "inferred", *data_overrides(env), *untold)
    assert status == 0
    status, explicit = evaluate(weights, tmp_path / "explicit", "--config", config_file(env, name, tmp_path))
    assert status == 0
    assert same_detections(inferred, explicit)
    metrics = json.loads((tmp_path / "inferred" / "metrics.json").read_text())
    assert metrics["source_kind"] == "weights"


def test_a_reference_checkpoint_with_args_evaluates(env, tmp_path):
    ckpt = torch.load(env["ckpt"]["irpe"], weights_only=True)
    m = ckpt["config"]["model"]
    args = argparse.Namespace(backbone="cnn_tiny", dilation=True, position_embedding="sine", enc_layers=m["enc_layers"],
                              dec_layers=m["dec_layers"], dim_feedforward=m["dim_feedforward"],
                              hidden_dim=m["hidden_dim"], dropout=m["dropout"], nheads=m["nheads"],
                              num_queries=m["num_queries"], pre_norm=False, enc_rpe2d=m["irpe"])
    path = tmp_path / "reference.pth"
    save_checkpoint({"model": ckpt["model"], "args": args, "epoch": 3}, path)
    overrides = data_overrides(env) + ["model.backbone.width=8", "model.backbone.norm=bn"]
    status, ref = evaluate(path, tmp_path / "ref", *overrides)
    assert status == 0
    _, own = evaluate(env["ckpt"]["irpe"], tmp_path / "own")
    assert same_detections(ref, own)


class Server:
    """An HTTP server on 127.0.0.1 serving one folder, in a thread."""

    def __init__(self, folder: Path):
        handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
        handler.log_message = lambda *a: None
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_a_url_is_downloaded_once_and_evaluated_from_the_cache(env, tmp_path, hub):
    served = tmp_path / "served"
    served.mkdir()
    (served / "micro.pth").write_bytes(env["ckpt"]["irpe"].read_bytes())
    server = Server(served)
    try:
        status, first = evaluate(server.url + "micro.pth", tmp_path / "a")
    finally:
        server.stop()
    assert status == 0 and (hub / "micro.pth").is_file()
    status, again = evaluate(server.url + "micro.pth", tmp_path / "b")  # the server is gone: the cache serves
    assert status == 0 and same_detections(first, again)


def test_a_zoo_name_downloads_its_file_and_applies_its_architecture(env, tmp_path, hub, monkeypatch):
    served = tmp_path / "served"
    served.mkdir()
    weights = weights_only(env, "irpe", served)
    entry = zoo.ZooEntry(name="micro-irpe", url="", file_name=weights.name, sha256=None,
                         overrides=("model.backbone.dilation=true",), ap=0.0, epochs=2, description="test model")
    server = Server(served)
    try:
        monkeypatch.setitem(zoo.ZOO, entry.name, zoo.ZooEntry(**{**entry.__dict__, "url": server.url + weights.name}))
        status, by_name = evaluate("micro-irpe", tmp_path / "zoo", *data_overrides(env))
    finally:
        server.stop()
    assert status == 0
    _, own = evaluate(env["ckpt"]["irpe"], tmp_path / "own")
    assert same_detections(by_name, own)


def error_of(capsys, source, *extra) -> str:
    status = run_main(evaluate_main, ["--checkpoint", str(source), *map(str, extra)])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and err and err[-1].startswith("error: ") and "Traceback" not in "\n".join(err)
    return err[-1]


def test_an_unreachable_url_names_the_url_and_where_to_put_the_file(capsys, hub):
    server = Server(Path("."))
    url = server.url + "gone.pth"
    server.stop()  # the port is closed now
    line = error_of(capsys, url)
    assert url in line and str(hub / "gone.pth") in line


def test_a_hash_mismatch_is_refused_and_the_file_removed(env, tmp_path, capsys, hub):
    served = tmp_path / "served"
    served.mkdir()
    (served / "micro-0123abcd.pth").write_bytes(env["ckpt"]["abs"].read_bytes())  # a hash prefix it does not have
    server = Server(served)
    try:
        line = error_of(capsys, server.url + "micro-0123abcd.pth")
    finally:
        server.stop()
    assert "0123abcd" in line
    assert not [p for p in hub.glob("*") if "micro-0123abcd" in p.name]  # neither the file nor a partial one


def test_a_state_dict_that_is_no_detr_is_refused(tmp_path, capsys):
    import torchvision

    path = tmp_path / "resnet18.pth"
    save_checkpoint({"model": torchvision.models.resnet18().state_dict()}, path)
    assert "resnet18.pth" in error_of(capsys, path)


def test_an_ambiguous_architecture_names_the_option_to_pass(env, tmp_path, capsys):
    # the euclidean and quantised methods make tables of the same shape: the weights cannot tell them apart
    from detr_irpe.config import load_config
    from detr_irpe.models import build_model
    from helpers import TINY

    cfg = load_config(None, TINY + ["model.irpe=rpe-2.0-quant-ctx-1-k"])
    path = tmp_path / "ambiguous.pth"
    save_checkpoint({"model": build_model(cfg)[0].state_dict()}, path)
    line = error_of(capsys, path, "model.backbone.width=8")
    assert "model.irpe=rpe-2.0-euc-ctx-1-k" in line


def test_an_unknown_name_suggests_the_nearest_zoo_entry(capsys):
    assert "did you mean 'detr-r50'" in error_of(capsys, "detr-r5O")


def test_a_folder_that_is_not_a_hugging_face_model_is_refused(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert "Hugging Face" in error_of(capsys, tmp_path / "empty")


def test_a_hugging_face_folder_evaluates_like_the_same_weights_in_a_checkpoint(env, tmp_path):
    from detr_irpe.config import load_config
    from detr_irpe.hub.huggingface import write_hf_folder
    from detr_irpe.models import build_model

    arch = ["model.backbone.name=resnet18", "model.backbone.weights=none", "model.backbone.norm=frozen_bn",
            "model.hidden_dim=32", "model.nheads=4", "model.enc_layers=1", "model.dec_layers=1",
            "model.dim_feedforward=64", "model.num_queries=5", "model.num_classes=5", "model.dropout=0.0"]
    cfg = load_config(None, arch + data_overrides(env))
    torch.manual_seed(0)
    model = build_model(cfg)[0]
    names = ["", "circle", "square", "triangle", "cross"]
    folder = write_hf_folder(model, cfg, names, tmp_path / "hf")
    status, from_hf = evaluate(folder, tmp_path / "hf_eval", *data_overrides(env))
    assert status == 0
    path = tmp_path / "same.pth"
    from detr_irpe.config import config_to_dict

    save_checkpoint({"model": model.state_dict(), "config": config_to_dict(cfg)}, path)
    status, from_ckpt = evaluate(path, tmp_path / "ckpt_eval")
    assert status == 0 and same_detections(from_hf, from_ckpt)


def test_weights_only_names_what_took_a_default(env, tmp_path, caplog):
    weights = weights_only(env, "abs", tmp_path)
    status, _ = evaluate(weights, tmp_path / "out", *data_overrides(env), "model.nheads=4")
    assert status == 0
    assert "do not tell" in caplog.text and "model.backbone.dilation" in caplog.text
