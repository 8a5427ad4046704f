"""lib.sources: each source yields a raw dataset in a supported layout; scanning reports what it cannot
pair or use (Kaggle downloads themselves are tested in test_kaggle.py)."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from lib import sources, synthetic
from lib.errors import DataSourceError
from tests import imagefactory


def generated(tmp_path, dataset="ham10000", per_class=6, seed=3):
    request = sources.SourceRequest(dataset, cache_dir=str(tmp_path / "cache"), seed=seed,
                                    generated_images_per_class=per_class, generated_image_size=48)
    return sources.fetch("generated", request)


def test_generated_ham10000_has_the_kaggle_layout_and_lesions_with_two_images(tmp_path):
    raw_dir = generated(tmp_path)
    assert raw_dir.parent == tmp_path / "cache" / "raw" and raw_dir.name.startswith("generated-ham10000-")
    assert {p.name for p in raw_dir.iterdir()} >= {"HAM10000_metadata.csv", "HAM10000_images_part_1", "HAM10000_images_part_2"}
    layout, records, problems = sources.scan(raw_dir)
    assert layout == "ham10000" and problems.empty
    assert sorted(records["label"].unique()) == list(sources.DX_CLASSES)
    assert records.groupby("label").size().eq(6).all()
    assert (records.groupby("lesion_id").size() == 2).any()
    metadata = pd.read_csv(raw_dir / "HAM10000_metadata.csv")
    assert list(metadata.columns) == ["lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization"]
    with Image.open(records["source_path"].iloc[0]) as picture:
        assert picture.format == "JPEG" and picture.size == (48, 36)  # 4:3 like HAM10000's 600x450


def test_generated_isic_binary_has_train_and_test_class_folders(tmp_path):
    layout, records, _ = sources.scan(generated(tmp_path, "isic_binary", per_class=10))
    assert layout == "class_folders"
    counts = records.groupby(["original_split", "label"]).size().to_dict()
    assert counts == {("test", "benign"): 2, ("test", "malignant"): 2, ("train", "benign"): 8, ("train", "malignant"): 8}
    assert records["image_id"].is_unique  # "1.jpg" exists in every folder


def test_generated_data_is_deterministic_and_reused(tmp_path):
    first = generated(tmp_path / "a")
    second = generated(tmp_path / "b")
    files = sorted(p.relative_to(first) for p in first.rglob("*.jpg"))
    assert files == sorted(p.relative_to(second) for p in second.rglob("*.jpg"))
    assert all((first / f).read_bytes() == (second / f).read_bytes() for f in files)
    stamp = (first / "HAM10000_metadata.csv").stat().st_mtime_ns
    assert generated(tmp_path / "a") == first
    assert (first / "HAM10000_metadata.csv").stat().st_mtime_ns == stamp
    assert generated(tmp_path / "a", seed=4) != first
    assert not [p for p in first.parent.iterdir() if p.name.startswith(".tmp")]


def test_local_source_reads_a_ham10000_folder_and_reports_unpaired_files(tmp_path):
    raw = tmp_path / "my data"
    for image_id in ("ISIC_1", "ISIC_2", "ISIC_3"):
        imagefactory.write_jpeg(raw / "HAM10000_images_part_1" / f"{image_id}.jpg")
    imagefactory.write_jpeg(raw / "ham10000_images_part_1" / "ISIC_1.jpg")  # Kaggle's duplicate folder
    imagefactory.write_jpeg(raw / "HAM10000_images_part_2" / "ISIC_orphan.jpg")
    pd.DataFrame({"lesion_id": ["HAM_1", "HAM_1", "HAM_2", None], "image_id": ["ISIC_1", "ISIC_2", "ISIC_3", "ISIC_gone"],
                  "dx": ["mel", "mel", "nv", "bcc"]}).to_csv(raw / "HAM10000_metadata.csv", index=False)
    raw_dir = sources.fetch("local", sources.SourceRequest("ham10000", path=str(raw)))
    layout, records, problems = sources.scan(raw_dir)
    assert layout == "ham10000"
    assert sorted(records["image_id"]) == ["ISIC_1", "ISIC_2", "ISIC_3"]
    assert records.set_index("image_id").loc["ISIC_1", "lesion_id"] == "HAM_1"
    assert dict(zip(problems["image_id"], problems["reason"])) == {
        "ISIC_gone": "metadata row has no image file", "ISIC_orphan": "image has no metadata row"}


def test_lesion_id_defaults_to_the_image_id(tmp_path):
    imagefactory.write_jpeg(tmp_path / "images" / "a.jpg")
    pd.DataFrame({"image_id": ["a"], "dx": ["df"]}).to_csv(tmp_path / "meta.csv", index=False)
    _, records, _ = sources.scan(tmp_path)
    assert records["lesion_id"].tolist() == ["a"]


def test_class_folders_with_odd_names_get_unique_safe_image_ids(tmp_path):
    imagefactory.write_jpeg(tmp_path / "wrapper" / "train" / "benign" / "mole 1.jpg")
    imagefactory.write_jpeg(tmp_path / "wrapper" / "train" / "benign" / "mole_1.jpg")
    imagefactory.write_jpeg(tmp_path / "wrapper" / "test" / "malignant" / "mélanome.jpg")
    layout, records, _ = sources.scan(tmp_path)
    assert layout == "class_folders"
    assert records["image_id"].is_unique
    assert all(" " not in image_id and "/" not in image_id for image_id in records["image_id"])
    assert "test-malignant-mélanome" in set(records["image_id"])


def test_a_folder_without_a_layout_says_what_is_expected(tmp_path):
    (tmp_path / "readme.txt").write_text("nothing here")
    with pytest.raises(DataSourceError, match="metadata CSV with image_id and dx"):
        sources.scan(tmp_path)


def test_local_source_without_a_path_says_to_set_it():
    with pytest.raises(DataSourceError, match="set data.path"):
        sources.fetch("local", sources.SourceRequest("ham10000"))


def test_unknown_source_lists_the_choices():
    with pytest.raises(DataSourceError, match="choose one of: generated, local, kaggle"):
        sources.fetch("s3", sources.SourceRequest("ham10000"))


def test_binary_labels_make_mel_bcc_akiec_malignant():
    records = pd.DataFrame({"label": list(sources.DX_CLASSES)})
    binary = sources.to_labels(records, "binary")
    assert dict(zip(records["label"], binary["label"])) == {
        "akiec": "malignant", "bcc": "malignant", "bkl": "benign", "df": "benign",
        "mel": "malignant", "nv": "benign", "vasc": "benign"}
    assert set(sources.LONG_NAMES) >= set(sources.DX_CLASSES) | {"benign", "malignant"}


def test_empty_class_folders_and_non_image_files_are_reported_not_ignored(tmp_path):
    imagefactory.write_jpeg(tmp_path / "train" / "benign" / "a.jpg")
    (tmp_path / "train" / "benign" / "notes.txt").write_text("taken in 2019")
    (tmp_path / "train" / "benign" / ".DS_Store").write_bytes(b"\0")  # hidden files are the system's, not data
    (tmp_path / "train" / "benign" / "more").mkdir()
    (tmp_path / "train" / "malignant").mkdir()
    imagefactory.write_jpeg(tmp_path / "test" / "benign" / "b.jpg")
    _, records, problems = sources.scan(tmp_path)
    assert records["image_id"].tolist() == ["train-benign-a", "test-benign-b"]
    assert dict(zip(problems["source_path"], zip(problems["label"], problems["reason"]))) == {
        str(tmp_path / "train" / "benign" / "more"): ("benign", "folder inside a class folder is not scanned"),
        str(tmp_path / "train" / "benign" / "notes.txt"): ("benign", "not an image file name (suffix '.txt')"),
        str(tmp_path / "train" / "malignant"): ("malignant", "class folder holds no image files")}


def test_a_damaged_generated_dataset_is_generated_again(tmp_path):
    first = generated(tmp_path)
    next(first.rglob("*.jpg")).unlink()
    assert generated(tmp_path) == first
    assert len(list(first.rglob("*.jpg"))) == 42


def test_an_interrupted_generation_leaves_nothing_behind(tmp_path, monkeypatch):
    def crash(folder, **kwargs):
        imagefactory.write_jpeg(folder / "HAM10000_images_part_1" / "ISIC_0.jpg")
        raise KeyboardInterrupt
    monkeypatch.setattr(synthetic, "write_synthetic_ham10000", crash)
    with pytest.raises(KeyboardInterrupt):
        generated(tmp_path)
    assert list((tmp_path / "cache" / "raw").iterdir()) == []


def test_mac_zip_resource_forks_are_not_a_class(tmp_path):
    imagefactory.write_jpeg(tmp_path / "benign" / "a.jpg")
    imagefactory.write_jpeg(tmp_path / "malignant" / "b.jpg")
    (tmp_path / "__MACOSX" / "benign").mkdir(parents=True)
    (tmp_path / "__MACOSX" / "benign" / "._a.jpg").write_bytes(b"\0\5\26\7")
    layout, records, problems = sources.scan(tmp_path)
    assert layout == "class_folders" and sorted(records["label"]) == ["benign", "malignant"] and problems.empty


OUTSIDE_FILE = "symbolic link to a file outside the dataset folder"
OUTSIDE_FOLDER = "symbolic link to a folder outside the dataset folder"


def link(path, target):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(target)
    return path


def reported(problems):
    return dict(zip(problems["source_path"], zip(problems["image_id"], problems["label"], problems["reason"])))


def test_a_linked_image_from_outside_the_dataset_is_reported_and_not_read(tmp_path):
    dataset, elsewhere = tmp_path / "dataset", tmp_path / "elsewhere"
    benign = dataset / "train" / "benign"
    imagefactory.write_jpeg(benign / "a.jpg")
    imagefactory.write_jpeg(dataset / "shared" / "b.jpg")
    imagefactory.write_jpeg(elsewhere / "secret.jpg")
    link(benign / "inside.jpg", dataset / "shared" / "b.jpg")  # links within the dataset are fine
    link(benign / "relative.jpg", Path("../../shared/b.jpg"))
    outside = link(benign / "outside.jpg", elsewhere / "secret.jpg")
    sneaky = link(benign / "sneaky.jpg", Path("../../../elsewhere/secret.jpg"))
    broken = link(benign / "gone.jpg", dataset / "missing.jpg")
    _, records, problems = sources.scan(dataset)
    assert sorted(records["image_id"]) == ["train-benign-a", "train-benign-inside", "train-benign-relative"]
    assert reported(problems) == {str(outside): ("", "benign", OUTSIDE_FILE), str(sneaky): ("", "benign", OUTSIDE_FILE),
                                  str(broken): ("", "benign", "broken symbolic link (its target does not exist)")}


def test_a_linked_folder_leading_outside_the_dataset_is_not_walked(tmp_path):
    dataset, elsewhere = tmp_path / "dataset", tmp_path / "elsewhere"
    imagefactory.write_jpeg(dataset / "train" / "benign" / "a.jpg")
    imagefactory.write_jpeg(dataset / "extra" / "nv" / "n.jpg")
    imagefactory.write_jpeg(elsewhere / "malignant" / "m.jpg")
    imagefactory.write_jpeg(elsewhere / "test" / "benign" / "t.jpg")
    link(dataset / "train" / "nv", Path("../extra/nv"))  # stays inside: walked
    class_link = link(dataset / "train" / "malignant", elsewhere / "malignant")
    split_link = link(dataset / "test", elsewhere / "test")
    layout, records, problems = sources.scan(dataset)
    assert layout == "class_folders" and sorted(records["image_id"]) == ["train-benign-a", "train-nv-n"]
    assert reported(problems) == {str(class_link): ("", "", OUTSIDE_FOLDER), str(split_link): ("", "", OUTSIDE_FOLDER)}


def test_a_ham10000_image_linked_from_outside_is_reported_once_with_its_class(tmp_path):
    dataset, elsewhere = tmp_path / "dataset", tmp_path / "elsewhere"
    imagefactory.write_jpeg(dataset / "HAM10000_images_part_1" / "ISIC_1.jpg")
    imagefactory.write_jpeg(elsewhere / "ISIC_2.jpg")
    imagefactory.write_jpeg(elsewhere / "part_2" / "ISIC_3.jpg")
    image_link = link(dataset / "HAM10000_images_part_1" / "ISIC_2.jpg", elsewhere / "ISIC_2.jpg")
    folder_link = link(dataset / "HAM10000_images_part_2", elsewhere / "part_2")
    pd.DataFrame({"image_id": ["ISIC_1", "ISIC_2", "ISIC_3"], "dx": ["mel", "nv", "bcc"]}).to_csv(
        dataset / "HAM10000_metadata.csv", index=False)
    layout, records, problems = sources.scan(dataset)
    assert layout == "ham10000" and records["image_id"].tolist() == ["ISIC_1"]
    assert reported(problems) == {str(image_link): ("ISIC_2", "nv", OUTSIDE_FILE),
                                  str(dataset / "ISIC_3"): ("ISIC_3", "bcc", "metadata row has no image file"),
                                  str(folder_link): ("", "", OUTSIDE_FOLDER)}


def test_a_metadata_csv_linked_from_outside_is_not_read(tmp_path):
    dataset, elsewhere = tmp_path / "dataset", tmp_path / "elsewhere"
    imagefactory.write_jpeg(dataset / "images" / "a.jpg")
    elsewhere.mkdir()
    pd.DataFrame({"image_id": ["a"], "dx": ["mel"]}).to_csv(elsewhere / "metadata.csv", index=False)
    csv_link = link(dataset / "metadata.csv", elsewhere / "metadata.csv")
    layout, records, problems = sources.scan(dataset)
    assert layout != "ham10000" and "mel" not in set(records["label"])
    assert reported(problems)[str(csv_link)] == ("", "", OUTSIDE_FILE)


def test_a_dataset_folder_reached_through_a_link_is_read_whole(tmp_path):
    dataset = tmp_path / "real"
    imagefactory.write_jpeg(dataset / "train" / "benign" / "a.jpg")
    imagefactory.write_jpeg(dataset / "shared" / "b.jpg")
    link(dataset / "train" / "benign" / "b.jpg", dataset / "shared" / "b.jpg")
    _, records, problems = sources.scan(link(tmp_path / "data.path", dataset))
    assert sorted(records["image_id"]) == ["train-benign-a", "train-benign-b"] and problems.empty


@pytest.mark.slow
def test_notebook_02_lists_a_link_out_of_the_dataset_in_skipped_csv(tmp_path):
    from lib import params, pipeline

    dataset, rng = tmp_path / "dataset", np.random.default_rng(0)
    for label in ("benign", "malignant"):
        for index in range(10):
            imagefactory.write_jpeg(dataset / label / f"{index}.jpg", rng.integers(0, 256, (30, 40, 3), np.uint8))
    imagefactory.write_jpeg(tmp_path / "elsewhere" / "secret.jpg")
    outside = link(dataset / "benign" / "outside.jpg", tmp_path / "elsewhere" / "secret.jpg")
    params_file = tmp_path / "linked.yaml"
    params_file.write_text(f"name: linked\ndata: {{source: local, path: {json.dumps(str(dataset))}, image_size: 32, "
                           f"max_bad_fraction: 0.5}}\n")
    run_dir = pipeline.create_run(tmp_path / "run", params.load(params_file), params_file)
    for notebook in ("01_download", "02_preprocess"):
        pipeline.run_notebook(run_dir, notebook)
    skipped = pd.read_csv(run_dir / "data" / "skipped.csv")
    assert dict(zip(skipped["source_path"], skipped["reason"])) == {str(outside): OUTSIDE_FILE}
    assert str(outside) not in set(pd.read_csv(run_dir / "data" / "manifest.csv")["source_path"])
