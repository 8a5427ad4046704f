"""lib.sources: each source yields a raw dataset in a supported layout; scanning reports what it cannot
pair; Kaggle downloads (mocked only at the kaggle package) are verified and extracted safely."""

import json
import sys
import types
import zipfile
from pathlib import Path

import pandas as pd
import pytest
import requests
from PIL import Image

from lib import images, sources
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


# ---- Kaggle: only the kaggle package is replaced ----------------------------------------------

@pytest.fixture
def no_credentials(monkeypatch, tmp_path):
    for name in ("KAGGLE_API_TOKEN", "KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_CONFIG_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def fake_kaggle(monkeypatch, download, authenticate=lambda: None):
    """Install a stand-in `kaggle` package whose KaggleApi.dataset_download_files calls `download`."""
    calls = []

    class KaggleApi:
        def authenticate(self):
            calls.append("authenticate")
            authenticate()

        def dataset_download_files(self, dataset, path=None, quiet=True, unzip=False, **kwargs):
            calls.append(dataset)
            download(dataset, path)

    module = types.ModuleType("kaggle.api.kaggle_api_extended")
    module.KaggleApi = KaggleApi
    monkeypatch.setitem(sys.modules, "kaggle", types.ModuleType("kaggle"))
    monkeypatch.setitem(sys.modules, "kaggle.api", types.ModuleType("kaggle.api"))
    monkeypatch.setitem(sys.modules, "kaggle.api.kaggle_api_extended", module)
    return calls


def class_folder_zip(tmp_path, members=None):
    """A real zip of a tiny class-folder dataset (5 train + 1 test per class) inside a wrapper folder."""
    folder = tmp_path / "zipsrc"
    images.write_synthetic_class_folders(folder, images_per_class=6, image_width=24, seed=0)
    archive = tmp_path / "dataset.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        for path in sorted(folder.rglob("*.jpg")):
            bundle.write(path, "skin/" + path.relative_to(folder).as_posix())
        for name, data in (members or {}).items():
            bundle.writestr(name, data)
    return archive


def serve(archive):
    def download(dataset, path):
        Path(path).mkdir(parents=True, exist_ok=True)
        (Path(path) / (dataset.split("/")[1] + ".zip")).write_bytes(archive.read_bytes())
    return download


def test_kaggle_download_is_verified_extracted_and_reused(tmp_path, monkeypatch, no_credentials):
    monkeypatch.setenv("KAGGLE_API_TOKEN", "secret-token-value")
    calls = fake_kaggle(monkeypatch, serve(class_folder_zip(tmp_path)))
    request = sources.SourceRequest("someone/tiny-skin", cache_dir=str(tmp_path / "cache"))
    raw_dir = sources.fetch("kaggle", request)
    assert raw_dir == tmp_path / "cache" / "raw" / "someone__tiny-skin"
    assert sources.verify_dataset(raw_dir) == {"train": 10, "test": 2}
    assert sources.fetch("kaggle", request) == raw_dir
    assert calls.count("someone/tiny-skin") == 1  # the second fetch reused the verified copy
    assert "secret-token-value" not in "".join(p.read_text(errors="ignore") for p in raw_dir.rglob("*.json"))
    assert sorted(p.name for p in raw_dir.parent.iterdir()) == ["someone__tiny-skin"]  # no temp left


def test_kaggle_download_with_wrong_counts_is_refused_and_not_kept(tmp_path, monkeypatch, no_credentials):
    monkeypatch.setenv("KAGGLE_USERNAME", "me")
    monkeypatch.setenv("KAGGLE_KEY", "k")
    fake_kaggle(monkeypatch, serve(class_folder_zip(tmp_path)))
    with pytest.raises(DataSourceError, match="has 10 train images, expected 2637"):
        sources.download_kaggle_dataset("fanconic/skin-cancer-malignant-vs-benign", tmp_path / "raw",
                                        expected_counts={"train": 2637, "test": 660})
    assert list((tmp_path / "raw").iterdir()) == []


@pytest.mark.parametrize("member", ["../evil.txt", "/abs/evil.txt", "skin/../../evil.txt"])
def test_zip_slip_is_refused_and_nothing_is_written(tmp_path, member):
    archive = class_folder_zip(tmp_path, members={member: "gotcha"})
    with pytest.raises(DataSourceError, match="unsafe member path"):
        sources.extract_zip_safely(archive, tmp_path / "out" / "target")
    assert not (tmp_path / "out").exists() and not (tmp_path / "evil.txt").exists()


def test_no_credentials_says_how_to_provide_them(tmp_path, monkeypatch, no_credentials):
    calls = fake_kaggle(monkeypatch, serve(class_folder_zip(tmp_path)))
    with pytest.raises(DataSourceError, match="Kaggle credentials not found: set KAGGLE_API_TOKEN"):
        sources.fetch("kaggle", sources.SourceRequest("ham10000", cache_dir=str(tmp_path / "cache")))
    assert calls == []


def test_credentials_are_looked_up_in_the_documented_order(tmp_path, no_credentials):
    home = no_credentials
    assert sources.find_kaggle_credentials({}, home) is None
    (home / ".kaggle").mkdir(parents=True)
    (home / ".kaggle" / "access_token").write_text("t")
    assert sources.find_kaggle_credentials({}, home).endswith("access_token")
    (home / ".kaggle" / "kaggle.json").write_text(json.dumps({"username": "u", "key": "k"}))
    assert sources.find_kaggle_credentials({}, home).endswith("kaggle.json")
    config = tmp_path / "config"
    config.mkdir()
    (config / "kaggle.json").write_text("{}")
    assert sources.find_kaggle_credentials({"KAGGLE_CONFIG_DIR": str(config)}, home) == str(config / "kaggle.json")
    assert sources.find_kaggle_credentials({"KAGGLE_USERNAME": "u", "KAGGLE_KEY": "k"}, home) == "KAGGLE_USERNAME/KAGGLE_KEY"
    assert sources.find_kaggle_credentials({"KAGGLE_API_TOKEN": "x", "KAGGLE_USERNAME": "u", "KAGGLE_KEY": "k"}, home) == "KAGGLE_API_TOKEN"


def http_error(status):
    response = requests.Response()
    response.status_code = status
    return requests.HTTPError(f"{status} Client Error", response=response)


@pytest.mark.parametrize("error, message", [
    (http_error(401), "refused the credentials \\(401\\).*kaggle.com/settings"),
    (http_error(403), "accept the dataset rules at https://www.kaggle.com/datasets/kmader/skin-cancer-mnist-ham10000"),
    (requests.ConnectionError("Failed to resolve www.kaggle.com"), "cannot reach Kaggle.*data.source: local"),
])
def test_kaggle_failures_say_what_to_do(tmp_path, monkeypatch, no_credentials, error, message):
    monkeypatch.setenv("KAGGLE_API_TOKEN", "secret-token-value")

    def fail(dataset, path):
        raise error
    fake_kaggle(monkeypatch, fail)
    with pytest.raises(DataSourceError, match=message) as raised:
        sources.fetch("kaggle", sources.SourceRequest("ham10000", cache_dir=str(tmp_path / "cache")))
    assert "secret-token-value" not in str(raised.value)
    assert [p.name for p in (tmp_path / "cache" / "raw").iterdir()] == []


def test_credentials_the_kaggle_package_rejects_give_the_setup_message(tmp_path, monkeypatch, no_credentials):
    monkeypatch.setenv("KAGGLE_USERNAME", "me")
    monkeypatch.setenv("KAGGLE_KEY", "k")

    def exit_like_kaggle():
        raise SystemExit(1)
    fake_kaggle(monkeypatch, serve(class_folder_zip(tmp_path)), authenticate=exit_like_kaggle)
    with pytest.raises(DataSourceError, match="Kaggle credentials not found"):
        sources.fetch("kaggle", sources.SourceRequest("isic_binary", cache_dir=str(tmp_path / "cache")))
