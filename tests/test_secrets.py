"""Secrets stay in memory: a Kaggle key planted in the environment appears in no file of the run folder,
no log, no captured output and no error message, even when a hostile error text carries it."""

import logging
import secrets
import sys
import traceback
import types

import pytest
import requests

from lib import params, paths, pipeline, sources
from lib.errors import DataSourceError, RunError

DEMO = paths.PARAMS_DIR / "demo.yaml"
TINY = ["data.generated_images_per_class=4", "data.generated_image_size=32", "data.image_size=32"]

# A stand-in `kaggle` package for the notebook kernel: every download fails with a 401 whose text
# quotes the key, as a careless server or library might.
FAKE_KAGGLE = '''
import os
import requests


class KaggleApi:
    def authenticate(self):
        pass

    def dataset_download_files(self, dataset, path=None, **kwargs):
        response = requests.Response()
        response.status_code = 401
        raise requests.HTTPError("401 Client Error for url: https://www.kaggle.com/api/v1/datasets/download/"
                                 + dataset + "?key=" + os.environ["KAGGLE_KEY"], response=response)
'''


@pytest.fixture
def planted(monkeypatch, tmp_path):
    """Fake credentials with unique random values, in the environment only; returns the secret values."""
    key, token = "plantedkey" + secrets.token_hex(16), "plantedtoken" + secrets.token_hex(16)
    monkeypatch.delenv("KAGGLE_CONFIG_DIR", raising=False)
    monkeypatch.setenv("KAGGLE_USERNAME", "planted-user")
    monkeypatch.setenv("KAGGLE_KEY", key)
    monkeypatch.setenv("KAGGLE_API_TOKEN", token)
    return key, token


def leaks(run_dir, texts, secret_values):
    """(where, secret) pairs: files under `run_dir` and strings of `texts` holding a secret."""
    found = [(str(path), secret) for path in run_dir.rglob("*") if path.is_file()
             for secret in secret_values if secret.encode() in path.read_bytes()]
    return found + [(name, secret) for name, text in texts.items() for secret in secret_values if secret in text]


def new_run(tmp_path, overrides):
    run_params = params.load(DEMO, overrides=["name=secrets", f"data.cache_dir={tmp_path / 'cache'}", *overrides])
    return pipeline.create_run(tmp_path / "outputs" / "secrets", run_params, DEMO)


@pytest.mark.slow  # two notebooks through papermill: about 15 s
def test_a_planted_key_is_in_no_run_file_and_no_log_after_notebooks_01_and_02(tmp_path, planted, caplog, capfd):
    run_dir = new_run(tmp_path, TINY)
    with caplog.at_level(logging.INFO):
        for notebook in ("01_download", "02_preprocess"):
            pipeline.run_notebook(run_dir, notebook, log_output=True)
    captured = capfd.readouterr()
    assert (run_dir / "data" / "manifest.csv").is_file() and (run_dir / "notebooks" / "02_preprocess.ipynb").is_file()
    assert "found 28, used 28, skipped 0" in caplog.text  # the kernel's output really was captured
    assert leaks(run_dir, {"log": caplog.text, "stdout": captured.out, "stderr": captured.err}, planted) == []


@pytest.mark.slow
def test_a_failed_kaggle_download_keeps_the_key_out_of_the_executed_notebook(tmp_path, planted, monkeypatch, caplog,
                                                                             capfd):
    package = tmp_path / "fake_packages" / "kaggle"
    (package / "api").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "api" / "__init__.py").write_text("")
    (package / "api" / "kaggle_api_extended.py").write_text(FAKE_KAGGLE)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "fake_packages"))  # the kernel imports the stand-in
    run_dir = new_run(tmp_path, ["data.source=kaggle", "data.dataset=ham10000"])
    with caplog.at_level(logging.INFO), pytest.raises(RunError, match="401") as raised:
        pipeline.run_notebook(run_dir, "01_download", log_output=True)
    captured = capfd.readouterr()
    executed = (run_dir / "notebooks" / "01_download.ipynb").read_text()
    assert "Kaggle refused the credentials (401)" in executed  # the error, with its advice, is recorded
    texts = {"error": str(raised.value), "log": caplog.text, "stdout": captured.out, "stderr": captured.err}
    assert leaks(run_dir, texts, planted) == []
    assert not list((tmp_path / "cache" / "raw").iterdir())


@pytest.mark.parametrize("status", [401, 500])
def test_the_kaggle_source_never_puts_the_key_into_its_error(tmp_path, monkeypatch, planted, caplog, status):
    key, token = planted

    class KaggleApi:
        def authenticate(self):
            pass

        def dataset_download_files(self, dataset, path=None, **kwargs):
            response = requests.Response()
            response.status_code = status
            raise requests.HTTPError(f"{status} Error for url: https://www.kaggle.com/x?key={key}&token={token}",
                                     response=response)

    module = types.ModuleType("kaggle.api.kaggle_api_extended")
    module.KaggleApi = KaggleApi
    monkeypatch.setitem(sys.modules, "kaggle", types.ModuleType("kaggle"))
    monkeypatch.setitem(sys.modules, "kaggle.api", types.ModuleType("kaggle.api"))
    monkeypatch.setitem(sys.modules, "kaggle.api.kaggle_api_extended", module)
    with caplog.at_level(logging.DEBUG), pytest.raises(DataSourceError, match=str(status)) as raised:
        sources.fetch("kaggle", sources.SourceRequest("ham10000", cache_dir=str(tmp_path / "cache")))
    shown = "".join(traceback.format_exception(raised.value))  # what a notebook or terminal would print
    assert "kaggle.com" in shown
    assert key not in shown and token not in shown
    assert key not in caplog.text and token not in caplog.text
