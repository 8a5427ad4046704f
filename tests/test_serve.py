"""lib.serve: the page, TF.js and one run's model from a single local origin."""

import json
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from lib import paths, serve
from lib.errors import ExportError


@pytest.fixture
def fake_site(tmp_path):
    """A web folder with an index page and a TF.js stand-in, and a run whose tfjs/ holds a model.json."""
    web_dir = tmp_path / "web"
    (web_dir / "node_modules" / "@tensorflow" / "tfjs").mkdir(parents=True)
    (web_dir / "index.html").write_text("<!doctype html><title>page</title>")
    (web_dir / "backend.wasm").write_bytes(b"\0asm")
    run_dir = tmp_path / "run"
    (run_dir / "tfjs").mkdir(parents=True)
    (run_dir / "tfjs" / "model.json").write_text(json.dumps({"format": "graph-model"}))
    (tmp_path / "secret.txt").write_text("outside")
    return web_dir, run_dir


@pytest.fixture
def base_url(fake_site):
    web_dir, run_dir = fake_site
    server = serve.make_server(serve.run_mounts(run_dir, web_dir=web_dir))
    yield serve.start_in_thread(server)
    server.shutdown()
    server.server_close()


def fetch(url):
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.headers, response.read()


def test_page_and_model_come_from_one_origin(base_url):
    status, _, body = fetch(base_url)
    assert status == 200 and b"<title>page</title>" in body
    status, headers, body = fetch(base_url + "model/model.json")
    assert json.loads(body) == {"format": "graph-model"}
    assert headers["Cache-Control"] == "no-store"


def test_wasm_is_served_with_its_mime_type(base_url):
    _, headers, _ = fetch(base_url + "backend.wasm")
    assert headers["Content-Type"] == "application/wasm"


def test_paths_cannot_escape_the_mounted_folders(base_url):
    for path in ("model/../../secret.txt", "model/%2e%2e/%2e%2e/secret.txt", "../secret.txt"):
        with pytest.raises(urllib.error.HTTPError) as error:
            fetch(base_url + path)
        assert error.value.code == 404


def test_serving_a_run_without_a_tfjs_model_says_which_notebook_to_run(tmp_path):
    with pytest.raises(ExportError, match="05_convert_tfjs"):
        serve.run_mounts(tmp_path)


def test_serving_without_npm_packages_says_to_run_npm_ci(fake_site, tmp_path):
    _, run_dir = fake_site
    with pytest.raises(ExportError, match="npm ci"):
        serve.run_mounts(run_dir, web_dir=tmp_path / "empty-web")


def test_mount_prefixes_must_be_folders():
    with pytest.raises(ValueError, match="start and end with '/'"):
        serve.make_server({"/model": paths.PROJECT_ROOT})


def test_serve_prints_the_url_of_the_page(fake_site):
    _, run_dir = fake_site
    if not (serve.WEB_DIR / "node_modules" / "@tensorflow" / "tfjs").is_dir():
        pytest.skip("web/node_modules missing: run `npm ci` in web/")
    process = subprocess.Popen([sys.executable, "-c", "import sys; from lib import serve; "
                                "serve.serve(sys.argv[1], port=0)", str(run_dir)],
                               stdout=subprocess.PIPE, text=True, cwd=paths.PROJECT_ROOT)
    try:
        line = process.stdout.readline()
        url = line.split()[3]
        assert url.startswith("http://127.0.0.1:")
        status, _, _ = fetch(url + "model/model.json")
        assert status == 200
    finally:
        process.terminate()
        process.wait(timeout=10)
