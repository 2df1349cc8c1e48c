"""File names and paths of dataset input (docs/reliability.md): spaces,
non-ASCII names, subfolders and symlinks are read; a file where a folder is expected, or the
reverse, is named."""

import pytest
from input_helpers import dataset
from PIL import Image

from detr_irpe.data.coco import CocoDetection
from detr_irpe.data.errors import DatasetError, ImageFileError
from detr_irpe.data.images import load_image


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
