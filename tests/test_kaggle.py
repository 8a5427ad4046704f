"""lib.kaggle: credentials are found, checked and never revealed; downloads (the kaggle package is the
only thing replaced) are verified, extracted safely and atomically, and reused only when verified."""

import functools
import json
import logging
import os
import re
import shutil
import stat
import sys
import types
import zipfile
from pathlib import Path

import pytest
import requests

from lib import kaggle, sources, synthetic
from lib.errors import DataSourceError


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
    synthetic.write_synthetic_class_folders(folder, images_per_class=6, image_width=24, seed=0)
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
        kaggle.download_dataset("fanconic/skin-cancer-malignant-vs-benign", tmp_path / "raw",
                                functools.partial(sources.verify_dataset, expected_counts={"train": 2637, "test": 660}))
    assert list((tmp_path / "raw").iterdir()) == []


@pytest.mark.parametrize("member", ["../evil.txt", "/abs/evil.txt", "skin/../../evil.txt", "C:/evil.txt",
                                    "skin\\..\\..\\evil.txt"])
def test_zip_slip_is_refused_and_nothing_is_written(tmp_path, member):
    archive = class_folder_zip(tmp_path, members={member: "gotcha"})
    with pytest.raises(DataSourceError, match="unsafe member path"):
        kaggle.extract_zip_safely(archive, tmp_path / "out" / "target")
    assert not (tmp_path / "out").exists() and not (tmp_path / "evil.txt").exists()


def test_no_credentials_says_how_to_provide_them(tmp_path, monkeypatch, no_credentials):
    calls = fake_kaggle(monkeypatch, serve(class_folder_zip(tmp_path)))
    with pytest.raises(DataSourceError, match="Kaggle credentials not found: set KAGGLE_API_TOKEN"):
        sources.fetch("kaggle", sources.SourceRequest("ham10000", cache_dir=str(tmp_path / "cache")))
    assert calls == []


def test_credentials_are_looked_up_in_the_documented_order(tmp_path, no_credentials):
    home = no_credentials
    assert kaggle.find_credentials({}, home) is None
    (home / ".kaggle").mkdir(parents=True)
    (home / ".kaggle" / "access_token").write_text("t")
    assert kaggle.find_credentials({}, home).endswith("access_token")
    (home / ".kaggle" / "kaggle.json").write_text(json.dumps({"username": "u", "key": "k"}))
    assert kaggle.find_credentials({}, home).endswith("kaggle.json")
    config = tmp_path / "config"
    config.mkdir()
    (config / "kaggle.json").write_text("{}")
    assert kaggle.find_credentials({"KAGGLE_CONFIG_DIR": str(config)}, home) == str(config / "kaggle.json")
    assert kaggle.find_credentials({"KAGGLE_USERNAME": "u", "KAGGLE_KEY": "k"}, home) == "KAGGLE_USERNAME/KAGGLE_KEY"
    assert kaggle.find_credentials({"KAGGLE_API_TOKEN": "x", "KAGGLE_USERNAME": "u", "KAGGLE_KEY": "k"}, home) == "KAGGLE_API_TOKEN"


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


def test_a_zip_with_a_symlink_member_is_refused_and_nothing_is_written(tmp_path):
    archive = class_folder_zip(tmp_path)
    link = zipfile.ZipInfo("skin/train/benign/link.jpg")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    with zipfile.ZipFile(archive, "a") as bundle:
        bundle.writestr(link, "/etc/passwd")
    with pytest.raises(DataSourceError, match="unsafe member path 'skin/train/benign/link.jpg'"):
        kaggle.extract_zip_safely(archive, tmp_path / "out" / "target")
    assert not (tmp_path / "out").exists()


def test_a_zip_larger_than_the_free_disk_is_refused_before_writing(tmp_path, monkeypatch):
    archive = class_folder_zip(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9 - 100, 100))
    with pytest.raises(DataSourceError, match="free some space or set data.cache_dir"):
        kaggle.extract_zip_safely(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def tiny_request(tmp_path):
    return sources.SourceRequest("someone/tiny-skin", cache_dir=str(tmp_path / "cache"))


def test_an_interrupted_extraction_leaves_nothing_a_later_run_would_trust(tmp_path, monkeypatch, no_credentials):
    monkeypatch.setenv("KAGGLE_API_TOKEN", "secret-token-value")
    calls = fake_kaggle(monkeypatch, serve(class_folder_zip(tmp_path)))
    copy, copied = shutil.copyfileobj, []

    def interrupted_copy(source, sink, *args):
        copied.append(sink.name)
        if len(copied) == 3:
            raise KeyboardInterrupt  # Ctrl-C (or a crash) in the middle of the extraction
        copy(source, sink, *args)
    monkeypatch.setattr(shutil, "copyfileobj", interrupted_copy)
    with pytest.raises(KeyboardInterrupt):
        sources.fetch("kaggle", tiny_request(tmp_path))
    raw_root = tmp_path / "cache" / "raw"
    assert list(raw_root.iterdir()) == []  # neither the target nor a temp folder is left
    monkeypatch.setattr(shutil, "copyfileobj", copy)
    raw_dir = sources.fetch("kaggle", tiny_request(tmp_path))
    assert sources.verify_dataset(raw_dir) == {"train": 10, "test": 2} and calls.count("someone/tiny-skin") == 2


def test_an_interrupted_download_leaves_nothing_and_the_next_run_downloads_again(tmp_path, monkeypatch, no_credentials):
    monkeypatch.setenv("KAGGLE_API_TOKEN", "secret-token-value")
    archive = class_folder_zip(tmp_path)

    def half_then_drop(dataset, path):
        Path(path, "tiny-skin.zip").write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
        raise requests.ConnectionError("Connection reset by peer")
    fake_kaggle(monkeypatch, half_then_drop)
    with pytest.raises(DataSourceError, match="cannot reach Kaggle"):
        sources.fetch("kaggle", tiny_request(tmp_path))
    assert list((tmp_path / "cache" / "raw").iterdir()) == []
    fake_kaggle(monkeypatch, serve(archive))
    assert sources.verify_dataset(sources.fetch("kaggle", tiny_request(tmp_path))) == {"train": 10, "test": 2}


def test_a_half_written_folder_from_a_killed_run_is_never_trusted(tmp_path, monkeypatch, no_credentials):
    monkeypatch.setenv("KAGGLE_API_TOKEN", "secret-token-value")
    calls = fake_kaggle(monkeypatch, serve(class_folder_zip(tmp_path)))
    raw_root = tmp_path / "cache" / "raw"
    partial = raw_root / "someone__tiny-skin" / "skin" / "train" / "benign"
    partial.mkdir(parents=True)  # what older code or a manual copy could leave: no marker
    (partial / "1.jpg").write_bytes(b"\xff\xd8 half")
    (raw_root / ".tmp-someone__tiny-skin-killed" / "extracted").mkdir(parents=True)  # SIGKILL mid-extraction
    raw_dir = sources.fetch("kaggle", tiny_request(tmp_path))
    assert calls.count("someone/tiny-skin") == 1
    assert sources.verify_dataset(raw_dir) == {"train": 10, "test": 2}


def test_a_verified_copy_that_changed_since_is_downloaded_again(tmp_path, monkeypatch, no_credentials):
    monkeypatch.setenv("KAGGLE_API_TOKEN", "secret-token-value")
    calls = fake_kaggle(monkeypatch, serve(class_folder_zip(tmp_path)))
    raw_dir = sources.fetch("kaggle", tiny_request(tmp_path))
    next(raw_dir.rglob("*.jpg")).unlink()  # a user (or a full disk) lost a file after the download
    assert sources.fetch("kaggle", tiny_request(tmp_path)) == raw_dir
    assert calls.count("someone/tiny-skin") == 2
    assert sources.verify_dataset(raw_dir) == {"train": 10, "test": 2}


# ---- credentials: each problem says exactly what to do ----------------------------------------

def write_kaggle_json(home, text, mode=0o600):
    path = home / ".kaggle" / "kaggle.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.chmod(path, mode)
    return path


@pytest.mark.parametrize("text, problem", [
    ('{"username": "me", "key": "abcdef0123456789secret"', "is not valid JSON \\(line 1, column 51\\)"),
    ('{"username": "me", "token": "abcdef0123456789secret"}', "lacks 'key'"),
    ("", "is not valid JSON \\(line 1, column 1\\)"),
    ('["abcdef0123456789secret"]', "lacks 'username' and 'key'"),
])
def test_a_malformed_kaggle_json_is_named_with_the_fix(tmp_path, monkeypatch, no_credentials, text, problem):
    path = write_kaggle_json(no_credentials, text)
    calls = fake_kaggle(monkeypatch, serve(class_folder_zip(tmp_path)))
    expected = f"Kaggle credentials file {re.escape(str(path))} is malformed: it {problem}"
    with pytest.raises(DataSourceError, match=expected) as raised:
        sources.fetch("kaggle", tiny_request(tmp_path))
    assert "save the downloaded kaggle.json as" in str(raised.value) and "chmod 600" in str(raised.value)
    assert "abcdef0123456789secret" not in str(raised.value)
    assert calls == []  # refused before the kaggle package, which would ignore the file silently


def test_a_kaggle_json_readable_by_others_is_used_with_a_chmod_warning(tmp_path, monkeypatch, no_credentials, caplog):
    path = write_kaggle_json(no_credentials, json.dumps({"username": "me", "key": "abcdef0123456789secret"}), 0o644)
    fake_kaggle(monkeypatch, serve(class_folder_zip(tmp_path)))
    with caplog.at_level(logging.WARNING, logger="lib.kaggle"):
        raw_dir = sources.fetch("kaggle", tiny_request(tmp_path))
    assert f"readable by other users on this system; to fix this, run: chmod 600 {path}" in caplog.text
    assert sources.verify_dataset(raw_dir) == {"train": 10, "test": 2}
    assert "abcdef0123456789secret" not in caplog.text


def test_a_private_kaggle_json_gives_no_warning(tmp_path, no_credentials, caplog):
    path = write_kaggle_json(no_credentials, json.dumps({"username": "me", "key": "abcdef0123456789secret"}))
    with caplog.at_level(logging.WARNING, logger="lib.kaggle"):
        kaggle.check_credentials_file(path)
    assert caplog.text == ""


def test_an_empty_access_token_file_says_how_to_replace_it(tmp_path, no_credentials):
    path = no_credentials / ".kaggle" / "access_token"
    path.parent.mkdir(parents=True)
    path.write_text("\n")
    with pytest.raises(DataSourceError, match=f"access token file {path} is empty: create a new token"):
        kaggle.check_credentials_file(path)


def test_another_http_error_is_reported_with_its_status_and_without_secrets(tmp_path, monkeypatch, no_credentials):
    monkeypatch.setenv("KAGGLE_API_TOKEN", "secret-token-value-123")

    def fail(dataset, path):
        raise http_error(503)
    fake_kaggle(monkeypatch, fail)
    with pytest.raises(DataSourceError, match="Kaggle answered HTTP 503 .*try again later"):
        sources.fetch("kaggle", tiny_request(tmp_path))


def finished_folder(path, marker, content):
    path.mkdir(parents=True)
    (path / "data.txt").write_text(content)
    (path / marker).write_text("{}")
    return path


def test_publish_folder_renames_a_finished_folder_into_place(tmp_path):
    staging = finished_folder(tmp_path / ".tmp-x", ".done", "mine")
    kaggle.publish_folder(staging, tmp_path / "x", ".done")
    assert (tmp_path / "x" / "data.txt").read_text() == "mine" and not staging.exists()


def test_publish_folder_keeps_the_finished_copy_of_a_writer_that_won_the_race(tmp_path):
    target = finished_folder(tmp_path / "x", ".done", "theirs")
    kaggle.publish_folder(finished_folder(tmp_path / ".tmp-x", ".done", "mine"), target, ".done")
    assert (target / "data.txt").read_text() == "theirs"


def test_publish_folder_refuses_to_stand_beside_an_unfinished_folder(tmp_path):
    target = tmp_path / "x"
    (target / "half").mkdir(parents=True)  # no marker: not a finished copy
    with pytest.raises(OSError):
        kaggle.publish_folder(finished_folder(tmp_path / ".tmp-x", ".done", "mine"), target, ".done")


def test_a_generated_dataset_finished_first_by_another_run_is_used(tmp_path, monkeypatch):
    request = sources.SourceRequest("isic_binary", cache_dir=str(tmp_path / "cache"), generated_images_per_class=4,
                                    generated_image_size=32)
    writer = synthetic.write_synthetic_class_folders

    def racing_writer(folder, **options):  # another run publishes the same dataset while this one writes
        writer(folder, **options)
        shutil.copytree(folder, target)
        (target / sources.GENERATED_MARKER).write_text("{}")

    target = sources.fetch("generated", request)
    shutil.rmtree(target)
    monkeypatch.setattr(synthetic, "write_synthetic_class_folders", racing_writer)
    assert sources.fetch("generated", request) == target and (target / sources.GENERATED_MARKER).exists()
    assert not [p for p in target.parent.iterdir() if p.name.startswith(".tmp")]
