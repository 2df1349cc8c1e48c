"""Classes of dataset input, each with the behaviour chosen for it (README, "What happens when
things go wrong"): sizes that come from the input, image modes, file names, category id gaps,
crowd regions, images without boxes, duplicate ids, wrong JSON types, and a file where a folder
is expected or the reverse."""

import json
import struct
import time
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from detr_irpe.data.coco import CocoDetection
from detr_irpe.data.errors import DatasetError, ImageFileError, ImageTooLargeError
from detr_irpe.data.images import image_size, load_image
from detr_irpe.data.limits import DEFAULT_MAX_IMAGE_PIXELS, MAX_CATEGORY_ID

CATS = [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]


def dataset(root, images, annotations=(), categories=CATS, write=True):
    """A COCO folder: ``images`` as (id, file_name, width, height), each written as a grey PNG of
    that size (``write``), and the annotation file; returns (image folder, annotation file)."""
    folder = root / "images"
    folder.mkdir(parents=True, exist_ok=True)
    for _, name, w, h in images:
        if write:
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (w, h), (90, 90, 90)).save(folder / name, format="PNG")
    ann_file = root / "ann.json"
    ann_file.write_text(json.dumps({
        "images": [{"id": i, "file_name": n, "width": w, "height": h} for i, n, w, h in images],
        "annotations": list(annotations), "categories": categories}))
    return folder, ann_file


def box(ann_id, image_id, bbox, category_id=1, **kw):
    return {"id": ann_id, "image_id": image_id, "category_id": category_id, "bbox": bbox, "area": 1.0, **kw}


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` RGB pixels and holds almost none of them."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


# ------------------------------------------------------------------ sizes that come from the input


def test_a_900_megapixel_png_is_refused_from_its_header_without_decoding(tmp_path):
    path = tmp_path / "huge.png"
    path.write_bytes(png_header(30_000, 30_000))
    assert image_size(path) == (30_000, 30_000)
    start = time.perf_counter()
    with pytest.raises(ImageTooLargeError, match=r"30000x30000 = 900,000,000 pixels, more than "
                                                 rf"data.max_image_pixels={DEFAULT_MAX_IMAGE_PIXELS}"):
        load_image(path)
    assert time.perf_counter() - start < 1.0  # 2.7 GB of pixels were never decoded


def test_the_pixel_limit_is_configurable_declared_and_stored(tmp_path):
    folder, ann_file = dataset(tmp_path, [(1, "a.png", 40, 30), (2, "b.png", 20, 20)])
    # declared sizes are checked when the dataset is built: nothing has been read or written yet
    with pytest.raises(DatasetError, match=r"image 1 \('a.png'\) as declared in .*40x30 = 1,200 pixels.*"
                                           r"max_image_pixels=1000.*data.invalid_images=skip"):
        CocoDetection(folder, ann_file, max_image_pixels=1000)
    skip = CocoDetection(folder, ann_file, max_image_pixels=1000, invalid_images="skip")
    assert skip.skipped_images == 1 and skip[0][1]["image_id"].item() == 2
    assert CocoDetection(folder, ann_file, max_image_pixels=None)[0][0].shape == (3, 30, 40)
    # a stored image larger than its declaration is caught from the file's header
    Image.new("RGB", (400, 300)).save(folder / "b.png")
    with pytest.raises(DatasetError, match=r"b.png .*400x300.*max_image_pixels=5000"):
        CocoDetection(folder, ann_file, max_image_pixels=5000)[1]


def test_category_ids_above_the_limit_are_refused_naming_the_id_the_file_and_a_remedy(tmp_path):
    folder, ann_file = dataset(tmp_path, [(1, "a.png", 8, 8)], [box(1, 1, [1, 1, 3, 3], 10**9)],
                               [{"id": 10**9, "name": "far"}])
    with pytest.raises(DatasetError, match=rf"{ann_file}: category 1000000000 \('far'\) is above the limit of "
                                           rf"{MAX_CATEGORY_ID}.*renumber the categories 1..1"):
        CocoDetection(folder, ann_file)
    # with an explicit class count the ids are bounded by it (and the model size by the estimate)
    with pytest.raises(DatasetError, match="is >= num_classes 5"):
        CocoDetection(folder, ann_file, num_classes=5)


@pytest.mark.parametrize("where", ["image", "annotation", "category"])
def test_ids_beyond_64_bits_are_refused(tmp_path, where):
    big = 2**64
    images = [{"id": big if where == "image" else 1, "file_name": "a.png", "width": 8, "height": 8}]
    anns = [box(big if where == "annotation" else 1, 1, [1, 1, 2, 2])]
    cats = [{"id": big if where == "category" else 1, "name": "a"}]
    folder, ann_file = dataset(tmp_path, [(1, "a.png", 8, 8)])
    ann_file.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    with pytest.raises(DatasetError, match=str(big)):
        CocoDetection(folder, ann_file, num_classes=3)


def test_an_empty_images_list_is_refused(tmp_path):
    folder, ann_file = dataset(tmp_path, [])
    with pytest.raises(DatasetError, match=rf"no images in {ann_file}"):
        CocoDetection(folder, ann_file)


# ------------------------------------------------------------------ image modes


def _pixels():
    rgb = np.zeros((6, 8, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 200, 100, 50
    return rgb


@pytest.mark.parametrize("name,make,expected", [
    ("gray.png", lambda: Image.fromarray(_pixels()[..., 0]), (200, 200, 200)),
    ("gray_alpha.png", lambda: Image.fromarray(np.dstack([_pixels()[..., 0], np.full((6, 8), 9, np.uint8)]), "LA"),
     (200, 200, 200)),
    ("palette.png", lambda: Image.fromarray(_pixels()).convert("P"), None),
    ("rgba.png", lambda: Image.fromarray(np.dstack([_pixels(), np.zeros((6, 8), np.uint8)]), "RGBA"), (200, 100, 50)),
    ("gray16.png", lambda: Image.fromarray(_pixels()[..., 0].astype(np.uint16) * 257), (200, 200, 200)),
    ("gray16.tif", lambda: Image.fromarray(_pixels()[..., 0].astype(np.uint16) * 257), (200, 200, 200)),
    ("cmyk.jpg", lambda: Image.fromarray(_pixels()).convert("CMYK"), None),
    ("bilevel.png", lambda: Image.fromarray(_pixels()[..., 0] > 100), (255, 255, 255)),
], ids=lambda v: v if isinstance(v, str) else "")
def test_every_image_mode_becomes_8_bit_rgb(tmp_path, name, make, expected):
    image = make()
    image.save(tmp_path / name)
    pixels = load_image(tmp_path / name)
    assert pixels.dtype == torch.uint8 and pixels.shape == (3, 6, 8)
    if expected is None:  # palette and CMYK: what PIL's own conversion gives
        with Image.open(tmp_path / name) as pil:
            expected = pil.convert("RGB").getpixel((0, 0))
    assert pixels[:, 0, 0].tolist() == list(expected)


# ------------------------------------------------------------------ names


def test_names_with_spaces_non_ascii_subfolders_and_symlinks_are_read(tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    Image.new("RGB", (12, 10), (1, 2, 3)).save(outside / "target.png")
    names = ["with space.png", "naïve_日本.png", "sub/dir/deep.png"]
    folder, ann_file = dataset(tmp_path / "ds", [(i + 1, n, 12, 10) for i, n in enumerate(names)]
                               + [(4, "link.png", 12, 10), (5, "linked/target.png", 12, 10)], write=False)
    for i, n in enumerate(names):
        (folder / n).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (12, 10), (10 * i, 0, 0)).save(folder / n)
    (folder / "link.png").symlink_to(outside / "target.png")     # a symlinked file: followed
    (folder / "linked").symlink_to(outside, target_is_directory=True)  # a symlinked folder: followed
    ds = CocoDetection(folder, ann_file)
    assert [ds[i][0][:, 0, 0].tolist() for i in range(5)] == [[0, 0, 0], [10, 0, 0], [20, 0, 0], [1, 2, 3], [1, 2, 3]]
    (outside / "target.png").unlink()  # the links now dangle
    with pytest.raises(DatasetError, match=r"link.png \(image id 4 .*does not exist; 1 more image files are missing"):
        CocoDetection(folder, ann_file)


# ------------------------------------------------------------------ categories, crowd, empty images


def test_category_id_gaps_keep_the_ids_as_class_indices(tmp_path):
    cats = [{"id": 1, "name": "a"}, {"id": 5, "name": "e"}, {"id": 90, "name": "z"}]
    folder, ann_file = dataset(tmp_path, [(1, "a.png", 20, 20)],
                               [box(1, 1, [1, 1, 4, 4], 1), box(2, 1, [5, 5, 4, 4], 90), box(3, 1, [9, 9, 4, 4], 5)], cats)
    ds = CocoDetection(folder, ann_file)
    assert ds.num_classes == 91  # as COCO: 80 categories with ids up to 90 give 91 classes
    assert ds[0][1]["labels"].tolist() == [1, 90, 5]


def test_crowd_regions_are_left_out_of_targets_and_counted(tmp_path):
    folder, ann_file = dataset(tmp_path, [(1, "a.png", 20, 20), (2, "b.png", 20, 20)],
                               [box(1, 1, [1, 1, 4, 4]), box(2, 1, [2, 2, 9, 9], iscrowd=1),
                                box(3, 2, [0, 0, 20, 20], iscrowd=1)])
    ds = CocoDetection(folder, ann_file)
    assert ds.crowd_boxes == 2 and ds.images_without_objects == 1  # image 2 holds a crowd region only
    assert ds[0][1]["boxes"].tolist() == [[1, 1, 5, 5]] and ds[1][1]["boxes"].shape == (0, 4)
    assert len(ds.coco.anns) == 3  # the ground truth of evaluation keeps them (COCO ignores detections there)
    bad = dataset(tmp_path / "bad", [(1, "a.png", 8, 8)], [box(1, 1, [1, 1, 2, 2], iscrowd=2)])
    with pytest.raises(DatasetError, match=r"iscrowd 2; expected 0 or 1"):
        CocoDetection(*bad)


def test_images_without_boxes_are_kept_with_empty_targets(tmp_path):
    folder, ann_file = dataset(tmp_path, [(1, "a.png", 20, 20), (2, "b.png", 16, 16)], [box(1, 1, [1, 1, 4, 4])])
    ds = CocoDetection(folder, ann_file)
    assert len(ds) == 2 and ds.images_without_objects == 1
    _, target = ds[1]
    assert target["boxes"].shape == (0, 4) and target["labels"].shape == (0,) and target["labels"].dtype == torch.int64


# ------------------------------------------------------------------ duplicate ids, wrong JSON types


@pytest.mark.parametrize("edit,message", [
    (lambda d: d["images"].append(dict(d["images"][0])), "image id 1 appears more than once"),
    (lambda d: d["annotations"].append(dict(d["annotations"][0])), "annotation id 1 appears more than once"),
    (lambda d: d["categories"].append(dict(d["categories"][0])), "category id 1 appears more than once"),
], ids=["image", "annotation", "category"])
def test_duplicate_ids_are_refused_naming_the_id(tmp_path, edit, message):
    folder, ann_file = dataset(tmp_path, [(1, "a.png", 8, 8)], [box(1, 1, [1, 1, 2, 2])])
    data = json.loads(ann_file.read_text())
    edit(data)
    ann_file.write_text(json.dumps(data))
    with pytest.raises(DatasetError, match=message):
        CocoDetection(folder, ann_file)


@pytest.mark.parametrize("edit,message", [
    (lambda d: [d], "expected a JSON object at the top level, got a list"),
    (lambda d: {**d, "images": {"1": d["images"][0]}}, "'images' must be a list, got an object"),
    (lambda d: {**d, "images": [{**d["images"][0], "id": "1"}]}, r"images\[0\] has id '1'; expected an integer"),
    (lambda d: {**d, "images": [{**d["images"][0], "width": "8"}]}, "width '8'; expected a positive integer"),
    (lambda d: {**d, "images": [{**d["images"][0], "file_name": 7}]}, "file_name 7; expected a string"),
    (lambda d: {**d, "annotations": [{**d["annotations"][0], "bbox": "1,1,2,2"}]}, "bbox '1,1,2,2'; expected"),
    (lambda d: {**d, "annotations": [{**d["annotations"][0], "area": "big"}]}, "area 'big'; expected a number"),
    (lambda d: {**d, "annotations": ["box"]}, r"annotations\[0\] must be an object, got a string"),
    (lambda d: {**d, "categories": [{"id": 1.5, "name": "a"}]}, r"categories\[0\] has id 1.5"),
], ids=["top list", "images dict", "id string", "width string", "file_name number", "bbox string", "area string",
        "annotation string", "category id float"])
def test_wrong_json_types_are_refused_naming_the_entry(tmp_path, edit, message):
    folder, ann_file = dataset(tmp_path, [(1, "a.png", 8, 8)], [box(1, 1, [1, 1, 2, 2])])
    ann_file.write_text(json.dumps(edit(json.loads(ann_file.read_text()))))
    with pytest.raises(DatasetError, match=message):
        CocoDetection(folder, ann_file)


# ------------------------------------------------------------------ a file where a folder is expected, or the reverse


def test_a_file_where_a_folder_is_expected_and_the_reverse_are_named(tmp_path):
    folder, ann_file = dataset(tmp_path, [(1, "a.png", 8, 8), (2, "sub", 8, 8)], write=False)
    Image.new("RGB", (8, 8)).save(folder / "a.png")
    (folder / "sub").mkdir()
    with pytest.raises(DatasetError, match=r"images/sub \(image id 2 .*is a folder, not an image file"):
        CocoDetection(folder, ann_file)
    with pytest.raises(ImageFileError, match="is a folder, not an image file"):
        load_image(folder / "sub")
    with pytest.raises(DatasetError, match=r"annotation file .* is a folder, not a file"):
        CocoDetection(folder, folder)
    with pytest.raises(DatasetError, match=r"image folder .*a.png .* is a file, not a folder"):
        CocoDetection(folder / "a.png", ann_file)
