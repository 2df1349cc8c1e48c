"""The model zoo: entries agree with their file names and build, names are checked."""

import shlex

import pytest

from detr_irpe.commands.evaluate import build_parser
from detr_irpe.commands.cli import parse_command_line
from detr_irpe.config import load_config
from detr_irpe.core.errors import SourceError
from detr_irpe.hub.download import hash_in_name
from detr_irpe.hub.infer import infer_architecture
from detr_irpe.hub.zoo import DETR_URL, IRPE_URL, ZOO, ZOO_COLUMNS, format_zoo_table, zoo_entry, zoo_table
from detr_irpe.models import build_model

NO_WEIGHTS = "model.backbone.weights=none"


@pytest.mark.parametrize("name", list(ZOO))
def test_entry_agrees_with_its_file_name_and_builds_a_config(name):
    entry = ZOO[name]
    assert entry.name == name
    cfg = load_config(None, [*entry.overrides, NO_WEIGHTS])
    assert cfg.model.num_classes == 91
    assert cfg.model.backbone.dilation == ("dc5" in name)
    assert cfg.model.backbone.name == ("resnet101" if "r101" in name else "resnet50")
    assert cfg.model.decoder == {"conditional": "conditional", "dab": "dab"}.get(name.split("-")[0], "detr")
    if cfg.model.decoder != "detr":  # on cloud drives: downloaded by hand from the page
        assert entry.url is None and entry.page.startswith("https://") and entry.file_name.endswith(".pth")
        assert cfg.model.num_patterns == (3 if name.endswith("3pat") else 0)
        assert cfg.model.random_refpoints_xy == name.endswith("fixxy")
        return
    assert entry.url.endswith("/" + entry.file_name)
    assert entry.sha256 == hash_in_name(entry.file_name)  # DETR: the name's hash prefix; iRPE: none
    assert entry.url.startswith(DETR_URL if entry.sha256 else IRPE_URL)
    if name.startswith("irpe-"):
        side = int(name.split("-")[3].split("x")[0])
        assert cfg.model.irpe.num_buckets == side * side
        assert name.endswith(f"-{entry.epochs}e")
    else:
        assert cfg.model.irpe is None


@pytest.mark.parametrize("name", ["detr-r50-dc5", "irpe-detr-r50-7x7-150e"])
def test_model_of_each_family_builds_and_its_overrides_settle_what_weights_cannot_tell(name):
    entry = zoo_entry(name)
    model = build_model(load_config(None, [*entry.overrides, NO_WEIGHTS]))[0]
    assert model.num_classes == 91
    inferred = infer_architecture(model.state_dict(), source=name, given=list(entry.overrides))
    assert inferred.undetermined == []
    rebuilt = load_config(None, [*inferred.overrides, NO_WEIGHTS])
    assert rebuilt.model == load_config(None, [*entry.overrides, NO_WEIGHTS]).model


def test_unknown_name_suggests_a_close_one_and_lists_the_names():
    with pytest.raises(SourceError, match=r"unknown model-zoo name 'detr-r5' \(did you mean 'detr-r50'\?\); known: "
                                          r"detr-r50, detr-r50-dc5, .*irpe-detr-r50-9x9-300e"):
        zoo_entry("detr-r5")
    with pytest.raises(SourceError) as info:
        zoo_entry("yolo")
    assert "did you mean" not in str(info.value) and all(n in str(info.value) for n in ZOO)
    assert zoo_entry(" DETR-R101 ") is ZOO["detr-r101"]


def test_table_rows_show_each_entry_and_a_command_that_parses():
    rows = zoo_table()
    assert [r[0] for r in rows] == list(ZOO) and all(len(r) == len(ZOO_COLUMNS) for r in rows)
    for row in rows:
        entry = ZOO[row[0]]
        assert row[1] == f"{entry.ap:.1f}" and row[2] == str(entry.epochs)
        assert ("DC5" in row[3]) == (entry.setting("model.backbone.dilation") == "true")
        assert (entry.setting("model.irpe") in row[3]) == (entry.setting("model.irpe") != "null")
        words = shlex.split(row[4])
        assert words[:2] == ["detr-irpe", "evaluate"]
        args = parse_command_line(build_parser(), words[2:])
        assert args.checkpoint == entry.name and "data.dataset=coco" in args.overrides
    lines = format_zoo_table().splitlines()
    assert lines[0].split() == list(ZOO_COLUMNS) and len(lines) == len(ZOO) + 1
    assert all(line.index(row[4]) == lines[0].index("evaluate") for line, row in zip(lines[1:], rows))


def test_entries_are_frozen():
    with pytest.raises(AttributeError):
        ZOO["detr-r50"].url = "http://elsewhere/"


def test_a_model_downloaded_by_hand_is_read_from_the_cache_or_named_with_its_page(hub, capsys):
    from detr_irpe.hub.loader import local_file

    entry = zoo_entry("dab-detr-r50-3pat")
    with pytest.raises(SourceError, match=r"zoo model dab-detr-r50-3pat is on a cloud drive.*download its checkpoint "
                                          r".* from https://drive.google.com/.* put it at .*checkpoints/"
                                          r"dab_detr_r50_3pat.pth, or give the file's path"):
        local_file(entry.name)
    hub.mkdir(parents=True)
    (hub / entry.file_name).write_bytes(b"by hand")
    assert local_file(entry.name) == hub / entry.file_name
