"""The steps from a raw dataset to processed images, shared by notebook 02 and the external evaluation."""

import numpy as np
from PIL import Image

from lib import params, preprocess, synthetic


def ham10000_folder(tmp_path, per_class=3):
    folder = tmp_path / "raw"
    synthetic.write_synthetic_ham10000(folder, images_per_class=per_class, image_width=40, seed=1)
    return folder


def test_find_images_labels_the_records_and_the_problems_in_the_label_mode(tmp_path):
    folder = ham10000_folder(tmp_path)
    (folder / "HAM10000_images_part_1" / "ISIC_stray.jpg").write_bytes(b"not listed in the metadata")

    layout, records, problems = preprocess.find_images(folder, "auto", "binary")

    assert layout == "ham10000" and len(records) == 21
    assert set(records["label"]) == {"benign", "malignant"}
    assert (records["label"] == "malignant").sum() == 9  # mel, bcc and akiec
    assert {"age", "sex", "localization", "dx_type"} <= set(records.columns)
    assert list(problems["reason"]) == ["image has no metadata row"]


def test_decode_and_resize_reports_unreadable_images_beside_the_problems(tmp_path):
    folder = ham10000_folder(tmp_path)
    broken = sorted((folder / "HAM10000_images_part_1").glob("*.jpg"))[0]
    broken.write_bytes(b"")
    _, records, problems = preprocess.find_images(folder, "auto", "dx")
    problems.loc[len(problems)] = [str(folder / "ISIC_gone"), "ISIC_gone", "nv", "metadata row has no image file"]

    used, skipped = preprocess.decode_and_resize(records, problems, tmp_path / "run" / "processed", 16, "squash",
                                                 relative_to=tmp_path / "run")

    assert len(used) == len(records) - 1 and len(skipped) == 2
    assert set(skipped["image_id"]) == {broken.stem, "ISIC_gone"}
    assert all(path.startswith("processed/") for path in used["path"])
    with Image.open(tmp_path / "run" / used["path"].iloc[0]) as image:
        assert image.size == (16, 16)


def test_external_dataset_is_fetched_and_processed_as_notebooks_01_and_02_do(tmp_path):
    run = params.from_dict({"name": "x", "data": {"labels": "binary", "image_size": 32, "cache_dir": str(tmp_path),
                                                   "generated_images_per_class": 4, "generated_image_size": 32},
                            "evaluate": {"external": {"source": "generated", "dataset": "isic_binary"}}})

    used, skipped = preprocess.prepare_external(run.evaluate.external, run.data, tmp_path / "run")

    assert len(used) == 8 and skipped.empty and set(used["label"]) == {"benign", "malignant"}
    assert all(path.startswith("external/processed/") for path in used["path"])
    pixels = np.asarray(Image.open(used["abs_path"].iloc[0]))
    assert pixels.shape == (32, 32, 3)
