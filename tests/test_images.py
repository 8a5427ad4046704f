"""lib.images: every decodable flavour becomes uint8 RGB the right way up; every broken file is refused
with a reason; resizing is square; processing accounts for every image; duplicates across splits are found."""

import cv2
import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageOps

from lib import images, inputs, synthetic
from lib.errors import ImageError
from tests import imagefactory


def test_jpeg_decodes_to_rgb_not_bgr(tmp_path):
    red = np.zeros((16, 16, 3), np.uint8)
    red[..., 0] = 250
    image = images.read_image(imagefactory.write_jpeg(tmp_path / "red.jpg", red))
    assert image.dtype == np.uint8 and image.shape == (16, 16, 3)
    assert image[..., 0].mean() > 200 and image[..., 2].mean() < 50


def test_grayscale_is_replicated_to_three_channels(tmp_path):
    path = imagefactory.write_png(tmp_path / "gray.png", Image.fromarray(np.full((8, 6), 77, np.uint8), "L"))
    image = images.read_image(path)
    assert image.shape == (8, 6, 3) and (image == 77).all()


def test_rgba_is_composited_on_white(tmp_path):
    pixels = np.zeros((4, 4, 4), np.uint8)
    pixels[..., 0] = 200  # red
    pixels[:2, :, 3] = 255  # top half opaque, bottom half transparent
    image = images.read_image(imagefactory.write_png(tmp_path / "rgba.png", Image.fromarray(pixels, "RGBA")))
    assert image.shape == (4, 4, 3)
    assert image[0, 0].tolist() == [200, 0, 0]
    assert image[3, 0].tolist() == [255, 255, 255]


def test_palette_png_decodes_to_its_colours(tmp_path):
    picture = Image.new("P", (5, 5), 1)
    picture.putpalette([0, 0, 0, 10, 200, 30] + [0, 0, 0] * 254)
    image = images.read_image(imagefactory.write_png(tmp_path / "palette.png", picture))
    assert image[2, 2].tolist() == [10, 200, 30]


def test_sixteen_bit_png_is_scaled_to_eight_bits(tmp_path):
    picture = Image.fromarray(np.full((6, 6), 65535, np.uint16))
    path = imagefactory.write_png(tmp_path / "deep.png", picture)
    with Image.open(path) as check:
        assert check.mode.startswith("I")  # really 16-bit on disk
    image = images.read_image(path)
    assert image.dtype == np.uint8 and (image == 255).all()


def test_sixteen_bit_rgb_png_keeps_its_colours_in_rgb_order(tmp_path):
    deep = np.zeros((4, 4, 3), np.uint16)
    deep[..., 0] = 65535  # written by opencv, so channel 0 is blue on disk
    path = tmp_path / "deep_rgb.png"
    path.write_bytes(cv2.imencode(".png", deep)[1].tobytes())
    assert images.read_image(path)[0, 0].tolist() == [0, 0, 255]


def test_grayscale_jpeg_is_replicated_to_three_channels(tmp_path):
    path = tmp_path / "gray.jpg"
    Image.fromarray(np.full((8, 8), 90, np.uint8), "L").save(path, "JPEG", quality=100)
    image = images.read_image(path)
    assert image.shape == (8, 8, 3) and np.abs(image.astype(int) - 90).max() <= 1


def test_palette_png_with_a_transparent_colour_is_composited_on_white(tmp_path):
    picture = Image.new("P", (4, 4), 1)
    picture.putpalette([0, 0, 0, 10, 200, 30] + [0, 0, 0] * 254)
    picture.putpixel((0, 0), 0)
    path = tmp_path / "palette_transparent.png"
    picture.save(path, "PNG", transparency=0)
    image = images.read_image(path)
    assert image[0, 0].tolist() == [255, 255, 255] and image[2, 2].tolist() == [10, 200, 30]


def test_cmyk_jpeg_decodes_to_its_rgb_colours(tmp_path):
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 220, 30, 40
    path = tmp_path / "cmyk.jpg"
    Image.fromarray(rgb).convert("CMYK").save(path, "JPEG", quality=95)
    with Image.open(path) as check:
        assert check.mode == "CMYK"
    image = images.read_image(path)
    assert image.shape == (8, 8, 3) and np.abs(image.astype(int) - rgb).max() < 12


@pytest.fixture
def no_decoding(monkeypatch):
    """Make any full decode fail the test: a refusal must come from the header alone (bounded memory)."""
    def decode(*args):
        raise AssertionError("the image was decoded")
    monkeypatch.setattr(cv2, "imdecode", decode)


def test_a_20000_by_20000_image_is_refused_from_its_header(tmp_path, no_decoding):
    path = imagefactory.write_blank_png(tmp_path / "huge.png", 20000, 20000)  # valid, 400 MB decoded
    assert path.stat().st_size < 2_000_000
    with pytest.raises(ImageError, match="too large: .*400000000 pixels"):
        images.read_image(path)


def test_a_decompression_bomb_is_refused_with_a_message(tmp_path, no_decoding):
    path = imagefactory.write_png_header(tmp_path / "bomb.png", 100_000, 100_000)
    with pytest.raises(ImageError, match="too large: .*decompression bomb"):
        images.read_image(path)
    moderate = imagefactory.write_blank_png(tmp_path / "moderate.png", 10_000, 9_000)  # under PIL's own limit
    with pytest.raises(ImageError, match="too large: 10000x9000 pixels is more than 80000000 .*bomb guard"):
        images.read_image(moderate)


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_orientation_is_applied_like_a_viewer_does(tmp_path, orientation):
    path = imagefactory.write_jpeg(tmp_path / f"rotated{orientation}.jpg", orientation=orientation)
    with Image.open(path) as picture:
        expected = np.asarray(ImageOps.exif_transpose(picture).convert("RGB")).astype(int)
    image = images.read_image(path)
    assert image.shape == expected.shape
    assert np.abs(image.astype(int) - expected).mean() < 3


def test_a_one_pixel_image_is_usable(tmp_path):
    image = images.read_image(imagefactory.write_png(tmp_path / "dot.png", Image.new("RGB", (1, 1), (1, 2, 3))))
    assert image.tolist() == [[[1, 2, 3]]]
    assert images.resize_image(image, 8, "pad").shape == (8, 8, 3)


@pytest.mark.parametrize("make, reason", [
    (lambda path: path.write_bytes(b""), "zero bytes"),
    (lambda path: path.write_text("this is not a picture"), "not an image"),
    (imagefactory.write_truncated_jpeg, "truncated"),
    (lambda path: imagefactory.write_png_header(path, 100_000, 100_000), "too large"),
])
def test_broken_files_are_refused_with_their_reason(tmp_path, make, reason):
    path = tmp_path / "broken.jpg"
    make(path)
    with pytest.raises(ImageError, match=reason):
        images.read_image(path)


def test_pixel_bound_refuses_before_decoding(tmp_path):
    path = imagefactory.write_jpeg(tmp_path / "big.jpg")  # 40x30 = 1200 pixels
    with pytest.raises(ImageError, match="too large: 40x30"):
        images.read_image(path, max_pixels=1000)


@pytest.mark.parametrize("mode", ["squash", "crop", "pad"])
def test_every_resize_mode_gives_a_square_uint8_image(mode):
    resized = images.resize_image(imagefactory.gradient(60, 45), 32, mode)
    assert resized.shape == (32, 32, 3) and resized.dtype == np.uint8


def test_pad_keeps_the_whole_picture_and_crop_cuts_the_sides():
    picture = np.full((20, 40, 3), 200, np.uint8)
    padded = images.resize_image(picture, 40, "pad")
    assert (padded[0] == 0).all() and (padded[20] == 200).all()  # black bands above and below
    assert (images.resize_image(picture, 40, "crop") == 200).all()


def test_unknown_resize_mode_names_the_choices():
    with pytest.raises(ValueError, match="squash, crop, pad"):
        images.resize_image(imagefactory.gradient(), 8, "stretch")


def test_processing_accounts_for_every_image_and_writes_pngs(tmp_path):
    raw = tmp_path / "raw"
    good = [imagefactory.write_jpeg(raw / "plain.jpg"),
            imagefactory.write_jpeg(raw / "with space ünïcödé 病变.jpg"),
            imagefactory.write_png(raw / "rgba.png", Image.new("RGBA", (9, 7), (5, 6, 7, 128)))]
    empty = raw / "empty.jpg"
    empty.write_bytes(b"")
    text = raw / "notes.jpg"
    text.write_text("hello")
    records = imagefactory.records_for(good + [empty, text, imagefactory.write_truncated_jpeg(raw / "cut.jpg")])
    used, skipped = images.process_images(records, tmp_path / "run" / "data" / "processed", image_size=16,
                                          relative_to=tmp_path / "run", workers=2)
    assert len(used) + len(skipped) == len(records)
    assert sorted(used["source_path"]) == sorted(map(str, good))
    assert dict(zip(skipped["source_path"], skipped["reason"].str.split(":").str[0])) == {
        str(empty): "zero bytes", str(text): "not an image", str(raw / "cut.jpg"): "truncated"}
    for row in used.itertuples():
        assert row.path.startswith("data/processed/")
        assert inputs.load_processed([tmp_path / "run" / row.path]).shape == (1, 16, 16, 3)
    assert used.set_index("image_id").loc["img2", ["original_width", "original_height"]].tolist() == [9, 7]


def test_skip_check_stops_on_request_or_above_the_bad_fraction():
    skipped = pd.DataFrame({"source_path": ["a.jpg"], "reason": ["zero bytes"]})
    images.check_skipped(100, skipped, on_bad_image="skip", max_bad_fraction=0.05)
    with pytest.raises(ImageError, match="on_bad_image is 'stop'"):
        images.check_skipped(100, skipped, on_bad_image="stop", max_bad_fraction=0.05)
    with pytest.raises(ImageError, match="max_bad_fraction"):
        images.check_skipped(10, skipped, on_bad_image="skip", max_bad_fraction=0.05)


def test_duplicates_across_splits_are_found_exact_and_near(tmp_path):
    rng = np.random.default_rng(1)
    original = synthetic.draw_lesion(synthetic.LESION_STYLES["mel"], 160, rng)
    other = rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)
    paths = [imagefactory.write_jpeg(tmp_path / "a.jpg", original),
             tmp_path / "a_copy.jpg",
             imagefactory.write_png(tmp_path / "a_small.png", Image.fromarray(original).resize((80, 60))),
             imagefactory.write_jpeg(tmp_path / "other.jpg", other),
             imagefactory.write_jpeg(tmp_path / "a_same_split.jpg", original, orientation=1)]
    paths[1].write_bytes(paths[0].read_bytes())
    used, _ = images.process_images(imagefactory.records_for(paths), tmp_path / "processed", image_size=16)
    used["split"] = ["train", "test", "validation", "test", "train"]
    duplicates = images.find_duplicates(used)
    found = {(row.kind, row.image_id_a, row.image_id_b) for row in duplicates.itertuples()}
    assert ("exact", "img0", "img1") in found
    assert ("near", "img0", "img2") in found
    assert not any("img3" in (a, b) for _, a, b in found)
    assert not any({a, b} == {"img0", "img4"} for _, a, b in found)  # same split: not a leak
