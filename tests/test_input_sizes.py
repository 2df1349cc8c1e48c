"""Sizes that come from dataset input are bounded before anything is allocated from them
(docs/reliability.md): image pixels (from the file header, declared and stored),
category ids, ids of more than 64 bits, an empty images list."""

import json
import struct
import time
import zlib

import pytest
from input_helpers import box, dataset
from PIL import Image

from detr_irpe.data.coco import CocoDetection
from detr_irpe.data.errors import DatasetError, ImageTooLargeError
from detr_irpe.data.images import image_size, load_image
from detr_irpe.core.limits import DEFAULT_MAX_IMAGE_PIXELS, MAX_CATEGORY_ID


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` RGB pixels and holds almost none of them."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


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
