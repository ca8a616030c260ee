"""Large portraits (issue 13, item 3): images over the pixel limit are refused before they are decoded, and big
ones render at a bounded working size (or the ``size`` asked for), never at full resolution."""

import io

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("dlib", reason="rendering detects the face with dlib-bin")

from mmflow_motion_liveportrait import face, render  # noqa: E402


def jpeg_claiming(width: int, height: int) -> bytes:
    """A small JPEG whose header says ``width×height`` (Pillow reads the size from the header, lazily)."""
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (128, 100, 90)).save(buffer, "JPEG")
    data = bytearray(buffer.getvalue())
    start = data.index(b"\xff\xc0")  # baseline frame header: length(2) precision(1) height(2) width(2)
    data[start + 5 : start + 7] = height.to_bytes(2, "big")
    data[start + 7 : start + 9] = width.to_bytes(2, "big")
    return bytes(data)


def test_an_8000_pixel_square_portrait_is_refused_before_decoding(tmp_path, monkeypatch):
    path = tmp_path / "huge.jpg"
    path.write_bytes(jpeg_claiming(8000, 8000))
    with Image.open(path) as opened:
        assert opened.size == (8000, 8000)

    def no_decoding(self, *args, **kwargs):
        raise AssertionError("the image was decoded before it was checked")

    monkeypatch.setattr(Image.Image, "load", no_decoding)
    monkeypatch.setattr("PIL.ImageFile.ImageFile.load", no_decoding)
    with pytest.raises(face.ImageTooLargeError) as error:
        render.make_renderer(path)
    message = str(error.value)
    assert str(path) in message and "8000×8000" in message and "40 MP" in message


def test_an_array_over_the_limit_is_refused(monkeypatch):
    monkeypatch.setattr(face, "MAX_IMAGE_PIXELS", 100 * 100)
    with pytest.raises(face.ImageTooLargeError, match="the image array: 120×100 pixels"):
        face.load_image(np.zeros((100, 120, 3), np.uint8))


@pytest.fixture(scope="module")
def big_portrait(tmp_path_factory, astronaut):
    """The astronaut at 3000×3000 (9 MP, allowed): rendered at full size it would be 27 MB per frame."""
    path = tmp_path_factory.mktemp("big") / "astronaut-3000.jpg"
    Image.fromarray(astronaut).resize((3000, 3000), Image.BICUBIC).save(path, quality=90)
    return path


def test_a_big_portrait_renders_at_the_bounded_working_size(big_portrait):
    renderer = render.make_renderer(big_portrait)
    assert renderer.source_frame.shape == (face.MAX_RENDER_SIDE, face.MAX_RENDER_SIDE, 3)
    frames = renderer.render_openings([0.0, 0.8], progress=False)
    assert frames.shape == (2, 1024, 1024, 3)
    assert np.abs(frames[1].astype(int) - frames[0].astype(int)).sum() > 0  # the mouth moved


@pytest.mark.parametrize("size", [256, 1536])
def test_size_sets_the_video_size_and_keeps_the_face_crop(big_portrait, size):
    renderer = render.make_renderer(big_portrait, size=size)
    frames = renderer.render_openings([0.0, 0.8], progress=False)
    assert frames.shape == (2, size, size, 3)
    assert renderer.face.image.shape == (512, 512, 3)  # the face is cropped at the working resolution
    left, top, right, bottom = renderer.mouth_box
    assert 0 <= left < right <= size and 0 <= top < bottom <= size
    assert np.abs(frames[1, top:bottom, left:right].astype(int) - frames[0, top:bottom, left:right]).mean() > 5


@pytest.mark.parametrize("size", [0, 16, 4096, 2.5, True])
def test_bad_sizes_are_refused(size):
    with pytest.raises(ValueError, match=r"size must be an integer number of pixels in \[64, 2048\]"):
        face.render_side(size, 512, 512)
