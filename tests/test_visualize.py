"""tools/visualize.py: detections, encoder attention and iRPE tables as PNG figures whose content
comes from the model."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from engine_helpers import micro_checkpoints, run_tool, tool_main
from PIL import Image

from detr_irpe.analysis import attention_figure, rpe_figure
from detr_irpe.inference.predict import Predictor, read_image
from detr_irpe.hub.loader import load_model
from detr_irpe.core.errors import UsageError
from detr_irpe.core.rpe_spec import RPESpec

ROOT = Path(__file__).resolve().parents[1]



visualize_main = tool_main("visualize")

# name -> (iRPE, seed, extra overrides)
VARIANTS = {
    "abs": ("", 0, []),
    "abs_other": ("", 1, []),
    "product_ctx": ("rpe-2.0-product-ctx-1-k", 2, ["model.enc_layers=2"]),
    "product_ctx_other": ("rpe-2.0-product-ctx-1-k", 3, ["model.enc_layers=2"]),
    "product_bias": ("rpe-2.0-product-bias-0-qk", 4, []),
    "cross": ("rpe-1.9-cross-ctx-0-qkv", 5, []),
    "euc": ("rpe-2.5-euc-bias-1-k", 6, []),
    "quant": ("rpe-2.0-quant-ctx-0-kv", 7, []),
}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    """Checkpoints of micro models (random weights, one seed each) and the synthetic dataset."""
    return micro_checkpoints(tmp_path_factory.mktemp("visualize"), VARIANTS)


def _png(path: Path) -> np.ndarray:
    """The pixels of a PNG written by the tool; fails unless it is a real, non-blank image."""
    assert path.is_file() and path.stat().st_size > 0
    with Image.open(path) as im:
        assert im.format == "PNG"
        assert im.width > 100 and im.height > 100
        pixels = np.asarray(im.convert("RGB"))
    assert pixels.std() > 5  # not a blank canvas
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50  # images and heat maps, not a few flat colours
    return pixels


def _run(argv) -> int:
    return run_tool(visualize_main, argv)


def _figure(argv, folder: Path) -> Path:
    """Run ``visualize`` with ``--output-dir folder``; the figure it wrote there, named after its
    kind, the folder's only file."""
    assert _run([*argv, "--output-dir", folder]) == 0
    out = folder / f"{argv[0]}.png"
    assert out.is_file() and [p.name for p in folder.iterdir()] == [out.name]
    return out


def test_predictions_figure_depends_on_the_model(env, capsys):
    a, b = env["root"] / "pred_a", env["root"] / "pred_b"
    for ck, out in ((env["ckpt"]["abs"], a), (env["ckpt"]["abs_other"], b)):
        capsys.readouterr()
        assert _run(["predictions", "--checkpoint", ck, "--val", 3, "--score-threshold", 0, "--output-dir", out]) == 0
        printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert printed["figure"] == str(out / "predictions.png")
        assert [p.name for p in out.iterdir()] == ["predictions.png"]
    pa, pb = _png(a / "predictions.png"), _png(b / "predictions.png")
    assert pa.shape == pb.shape and not np.array_equal(pa, pb)


def test_predictions_on_a_folder_skip_non_images(env, tmp_path, capsys):
    figures = {}
    for kind in ("images only", "with a text file"):
        folder = tmp_path / kind
        folder.mkdir()
        for name in ("000000.png", "000001.png"):
            (folder / name).write_bytes((env["data"] / "val" / name).read_bytes())
        if kind == "with a text file":
            (folder / "readme.txt").write_text("not an image")
        figures[kind] = tmp_path / f"{kind} figure" / "predictions.png"
        capsys.readouterr()
        assert _run(["predictions", "--checkpoint", env["ckpt"]["product_ctx"], "--images", folder,
                     "--score-threshold", 0, "--output-dir", figures[kind].parent]) == 0
    err = capsys.readouterr().err
    assert "skipping" in err and "readme.txt: not an image file (suffix '.txt')" in err
    # the skipped file left no trace: the figure is the one of the two images alone
    assert np.array_equal(_png(figures["images only"]), _png(figures["with a text file"]))
    only_text = tmp_path / "text only"
    only_text.mkdir()
    (only_text / "readme.txt").write_text("not an image")
    assert _run(["predictions", "--checkpoint", env["ckpt"]["product_ctx"], "--images", only_text,
                 "--output-dir", tmp_path / "none"]) == 2
    assert "holds no image files (1 other file(s)" in capsys.readouterr().err
    assert not (tmp_path / "none").exists()


def test_attention_maps_follow_the_pixel_and_are_distributions(env):
    loaded = load_model(env["ckpt"]["product_ctx"])
    image = read_image(env["data"] / "val" / "000000.png")
    h, w = image.shape[-2:]
    pred = Predictor(loaded)
    first = attention_figure.attention_maps(pred, image, 0, 0)
    last = attention_figure.attention_maps(pred, image, w - 1, h - 1)
    assert first.maps.shape == (2, 4, h, w)  # layers, heads, original image size
    assert first.token == (0, 0)
    vh, vw = first.grid.shape[-2:]
    assert last.token == (vh - 1, vw - 1)
    # the unpadded cells hold every key's weight: padding is masked out of the softmax
    np.testing.assert_allclose(first.grid.sum(axis=(-1, -2)), 1.0, atol=1e-5)
    assert not np.allclose(first.maps, last.maps)
    with pytest.raises(UsageError, match="outside the image"):
        attention_figure.attention_maps(pred, image, w, 0)


def test_attention_figure_with_two_checkpoints_has_both(env, capsys):
    ck_abs, ck_irpe = env["ckpt"]["abs"], env["ckpt"]["product_ctx"]
    one = _figure(["attention", "--checkpoint", ck_irpe, "--val-index", 1, "--x", 10, "--y", 20],
                  env["root"] / "att_one")
    two = _figure(["attention", "--checkpoint", ck_abs, "--checkpoint", ck_irpe, "--val-index", 1, "--x", 10,
                   "--y", 20], env["root"] / "att_two")
    assert one.name == two.name == "attention.png"
    p1, p2 = _png(one), _png(two)
    assert p2.shape[1] > 1.5 * p1.shape[1]  # two blocks of head columns side by side

    # the figure itself: an image panel per model, then layers x heads maps each
    image = read_image(env["data"] / "val" / "000001.png")
    entries = []
    for ck in (ck_abs, ck_irpe):
        loaded = load_model(ck)
        entries.append((loaded.label, image, attention_figure.attention_maps(Predictor(loaded), image, 10, 20)))
    fig = attention_figure.attention_figure(entries)
    assert len(fig.axes) == (1 + 1 * 4) + (1 + 2 * 4)
    titles = " ".join(ax.get_title() for ax in fig.axes)
    assert "abs.pth" in titles and "product_ctx.pth" in titles
    assert not np.allclose(entries[0][2].maps[0], entries[1][2].maps[0])

    # another model, another figure
    other = _figure(["attention", "--checkpoint", env["ckpt"]["product_ctx_other"], "--val-index", 1, "--x", 10,
                     "--y", 20], env["root"] / "att_other")
    po = _png(other)
    assert po.shape == p1.shape and not np.array_equal(po, p1)


@pytest.mark.parametrize("name", ["product_ctx", "product_bias", "cross", "euc", "quant"])
def test_rpe_figure_for_each_variant(env, name):
    out = _figure(["rpe", "--checkpoint", env["ckpt"][name]], env["root"] / f"rpe_{name}")
    assert out.name == "rpe.png"
    _png(out)
    spec = RPESpec.parse(VARIANTS[name][0])
    tables = rpe_figure.rpe_tables(load_model(env["ckpt"][name]).model)
    layers = 2 if name == "product_ctx" else 1
    assert [(t.layer, t.side) for t in tables] == [(n, s) for n in range(layers) for s in spec.rpe_on]
    B, heads = spec.half_width, 1 if spec.shared_head else 4
    for t in tables:
        if spec.method == "product":
            assert t.values.shape == (heads, 2 * B + 1, 2 * B + 1)
        elif spec.method == "cross":
            assert set(t.values) == {"rows", "cols"} and t.values["rows"].shape == (heads, 2 * B + 1)
        else:
            assert t.values.shape == (heads, B + 1)  # distances are >= 0: buckets B..2B


def test_rpe_figure_differs_between_checkpoints(env):
    a = _figure(["rpe", "--checkpoint", env["ckpt"]["product_ctx"]], env["root"] / "rpe_a")
    b = _figure(["rpe", "--checkpoint", env["ckpt"]["product_ctx_other"]], env["root"] / "rpe_b")
    pa, pb = _png(a), _png(b)
    assert pa.shape == pb.shape and not np.array_equal(pa, pb)


def test_rpe_values_are_the_tables_in_bucket_layout(env):
    """Bias: the scalar of bucket (r + B) * (2B + 1) + (c + B) sits at map[r + B, c + B]; contextual:
    the L2 norm of the bucket's vector."""
    model = load_model(env["ckpt"]["product_bias"]).model
    attn = model.transformer.encoder.layers[0].self_attn
    B = attn.rpe.half_width
    with torch.no_grad():
        attn.rpe_k.lookup_table_bias[2, (1 + B) * (2 * B + 1) + (-2 + B)] = 7.0
    k = next(t for t in rpe_figure.rpe_tables(model) if t.side == "k")
    assert k.values[2, 1 + B, -2 + B] == 7.0
    np.testing.assert_array_equal(k.values.reshape(4, -1), attn.rpe_k.lookup_table_bias.detach().numpy())

    model = load_model(env["ckpt"]["cross"]).model
    attn = model.transformer.encoder.layers[0].self_attn
    tables = {t.side: t for t in rpe_figure.rpe_tables(model)}
    w_k = attn.rpe_k.rp_cols.lookup_table_weight.detach()  # (heads, head_dim, K)
    np.testing.assert_allclose(tables["k"].values["cols"], w_k.norm(dim=1).numpy(), rtol=1e-6)
    w_v = attn.rpe_v.rp_rows.lookup_table_weight.detach()  # (heads, K, head_dim)
    np.testing.assert_allclose(tables["v"].values["rows"], w_v.norm(dim=2).numpy(), rtol=1e-6)


def test_offset_labels_name_the_offsets_of_each_bucket():
    spec = RPESpec.parse("rpe-2.0-product-ctx-1-k")  # alpha 2, beta 4, gamma 16: B = 4
    assert rpe_figure.offset_labels(spec) == ["≤-10", "-9..-4", "-3..-2", "-1", "0", "1", "2..3", "4..9", "≥10"]
    assert rpe_figure.distance_labels(RPESpec.parse("rpe-2.0-euc-ctx-1-k")) == ["0", "1", "2..3", "4..9", "≥10"]


def test_rpe_of_a_model_without_irpe_is_a_clear_error(env, capsys):
    out = env["root"] / "none"
    assert _run(["rpe", "--checkpoint", env["ckpt"]["abs"], "--output-dir", out]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error:") and "no iRPE" in err
    assert not (out / "rpe.png").exists()


def test_bad_arguments_are_one_line_errors(env, tmp_path, capsys):
    ck = env["ckpt"]["abs"]
    assert _run(["predictions", "--checkpoint", ck, "--images", env["root"] / "missing", "--output-dir",
                 tmp_path / "x"]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    assert _run(["attention", "--checkpoint", ck, "--val-index", 0, "--x", 1000, "--y", 0, "--output-dir",
                 tmp_path / "x"]) == 2
    assert "outside the image" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("kind", ["predictions", "attention", "rpe"])
def test_an_output_dir_that_is_a_file_is_a_one_line_error(env, tmp_path, capsys, kind):
    """--output-dir naming a regular file (or a folder inside one) is refused before any model is
    loaded, and the file is left as it was."""
    taken = tmp_path / "figure.png"
    taken.write_bytes(b"not a folder")
    extra = {"predictions": ["--val", 1], "attention": ["--val-index", 0], "rpe": []}[kind]
    for out, where in ((taken, "is"), (taken / "inside", f"is inside {taken}, which is")):
        assert _run([kind, "--checkpoint", tmp_path / "never_read.pth", *extra, "--output-dir", out]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1
        assert err.startswith(f"error: --output-dir {out} {where} a file, not a folder")
    assert taken.read_bytes() == b"not a folder"
