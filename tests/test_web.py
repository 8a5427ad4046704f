"""web/: the page, served by lib.serve with a run's model, driven in headless Chromium like a user would."""

import os

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from test_export import make_run_dir, require_browser, small_cnn, trained  # noqa: E402

from lib import browser, export, images, paths, serve  # noqa: E402

SCREENSHOT = paths.OUTPUTS_DIR / "test-artifacts" / "web.png"


@pytest.fixture(scope="module")
def page_session(tmp_path_factory):
    """Serve a fake run (tiny trained model, converted float32) and upload files through the page's input:
    a text file, a corrupt PNG, an 8000x6000 JPEG, a 3x2 PNG, a 120x90 photo the page must shrink like the
    pipeline does, then a test PNG (screenshot of its result)."""
    require_browser()
    root = tmp_path_factory.mktemp("web")
    model = trained(small_cnn(), epochs=20)
    run_dir = make_run_dir(root / "run", model)
    export.export_run(run_dir, quantize="none", parity_images=4, browser_parity_mode="off", run_name="web-test",
                      model=model, compare_quantizations=("none",))
    files = root / "files"
    files.mkdir()
    (files / "notes.txt").write_text("not a photo")
    (files / "broken.png").write_bytes((run_dir / "data/processed/img001.png").read_bytes()[:60])
    Image.new("RGB", (8000, 6000), (200, 150, 140)).save(files / "huge.jpg", quality=80)
    Image.fromarray(np.array([[[90, 40, 40]] * 3] * 2, dtype="uint8")).save(files / "tiny.png")
    test_png = run_dir / "data/processed/img001.png"
    Image.open(test_png).resize((120, 90), Image.BICUBIC).save(files / "photo.png")
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    server = serve.make_server(serve.run_mounts(run_dir))
    try:
        url = serve.start_in_thread(server)
        result = browser.run_script("check_page.mjs", {"url": url, "timeout_ms": 60000, "uploads": [
            {"path": str(files / "notes.txt")}, {"path": str(files / "broken.png")},
            {"path": str(files / "huge.jpg")}, {"path": str(files / "tiny.png")}, {"path": str(files / "photo.png")},
            {"path": str(test_png), "screenshot": str(SCREENSHOT)}]}, timeout_seconds=180)
    finally:
        server.shutdown()
        server.server_close()
    pipeline_photo = images.resize_image(images.read_image(files / "photo.png"), 32, "squash")
    keras_probabilities = model.predict(np.stack([np.asarray(Image.open(test_png).convert("RGB")), pipeline_photo])
                                        .astype("float32"), verbose=0)
    return result, {upload["path"].rsplit("/", 1)[-1]: upload for upload in result["uploads"]}, keras_probabilities


def test_page_loads_the_run_model_and_shows_the_disclaimer(page_session):
    result, _, _ = page_session
    assert result["loaded"]["state"] == "ready", result
    assert "web-test" in result["loaded"]["modelInfo"] and "wasm" in result["loaded"]["modelInfo"]
    assert "not a diagnosis" in result["loaded"]["disclaimer"]


def test_uploaded_test_image_shows_the_keras_top_class_and_probability(page_session):
    _, uploads, keras_probabilities = page_session
    keras_probabilities = keras_probabilities[0]
    shown = uploads["img001.png"]
    assert shown["state"] == "done" and shown["resultShown"], shown
    top = shown["predictions"][0]
    assert top["label"] == ["bcc", "mel", "nv"][int(keras_probabilities.argmax())]
    assert abs(top["probability"] - float(keras_probabilities.max())) <= 1e-4
    assert top["text"] == f"{top['label']}: {top['probability'] * 100:.1f}%"
    assert len(shown["predictions"]) == 3 and shown["predictions"][0]["longName"]
    assert shown["unsureShown"] == (keras_probabilities.max() < 0.5)


def test_page_resizes_a_photo_like_the_pipeline(page_session):
    _, uploads, keras_probabilities = page_session
    shown = uploads["photo.png"]
    pipeline = dict(zip(["bcc", "mel", "nv"], keras_probabilities[1]))
    assert shown["state"] == "done" and "120×90, resized to 32×32" in shown["status"]
    assert max(abs(item["probability"] - pipeline[item["label"]]) for item in shown["predictions"]) <= 1e-3


def test_non_image_file_gets_a_message_not_a_result(page_session):
    shown = page_session[1]["notes.txt"]
    assert shown["state"] == "error" and not shown["resultShown"]
    assert "is not an image" in shown["status"]


def test_corrupt_image_gets_a_message(page_session):
    shown = page_session[1]["broken.png"]
    assert shown["state"] == "error" and "could not be read as an image" in shown["status"]


def test_huge_and_tiny_images_are_classified(page_session):
    for name, size in (("huge.jpg", "8000×6000"), ("tiny.png", "3×2")):
        shown = page_session[1][name]
        assert shown["state"] == "done" and len(shown["predictions"]) == 3, shown
        assert size in shown["status"]


def test_no_request_leaves_the_origin(page_session):
    result = page_session[0]
    assert result["foreignRequests"] == []
    assert not [line for line in result["log"] if "Content Security Policy" in line], result["log"]


def test_screenshot_of_a_result_is_saved(page_session):
    assert SCREENSHOT.stat().st_size > 10_000
