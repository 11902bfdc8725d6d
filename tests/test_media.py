import numpy as np
import pytest
from PIL import Image

from forensics import media
from forensics.errors import MediaError


def test_png_round_trip_is_exact(tmp_path, photo):
    p = media.write_png(tmp_path / "a.png", photo)
    assert np.array_equal(media.read_image(p), photo)
    assert media.sniff(p) == "image"


@pytest.mark.parametrize("fmt,ext", [("JPEG", "jpg"), ("WEBP", "webp"), ("BMP", "bmp"), ("TIFF", "tif")])
def test_image_formats_decode_to_rgb8(tmp_path, photo, fmt, ext):
    p = tmp_path / f"a.{ext}"
    Image.fromarray(photo).save(p, fmt)
    out = media.read_image(p)
    assert out.shape == photo.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - photo).mean() < 8  # lossy formats stay close


def test_gif_first_frame(tmp_path, photo):
    frames = [Image.fromarray(photo), Image.fromarray(255 - photo)]
    p = tmp_path / "anim.gif"
    frames[0].save(p, save_all=True, append_images=frames[1:], duration=100)
    out = media.read_image(p)
    assert out.shape == photo.shape
    assert np.abs(out.astype(int) - photo).mean() < np.abs(out.astype(int) - (255 - photo)).mean()


def test_16bit_grayscale_and_rgba_convert(tmp_path, photo):
    g16 = (np.linspace(0, 65535, 64 * 48).reshape(48, 64)).astype(np.uint16)
    p = tmp_path / "g16.png"
    Image.fromarray(g16).save(p)
    out = media.read_image(p)
    assert out.shape == (48, 64, 3) and out.dtype == np.uint8
    assert out[0, 0, 0] == 0 and out[-1, -1, 0] == 255  # scaled, not clipped
    rgba = np.dstack([photo, np.full(photo.shape[:2], 255, np.uint8)])
    p2 = tmp_path / "rgba.png"
    Image.fromarray(rgba, "RGBA").save(p2)
    assert np.array_equal(media.read_image(p2), photo)


def test_grayscale_jpeg(tmp_path, photo):
    p = tmp_path / "g.jpg"
    Image.fromarray(photo[..., 1]).save(p, "JPEG")
    out = media.read_image(p)
    assert out.shape == photo.shape and np.array_equal(out[..., 0], out[..., 2])


def _clip(t=10, h=32, w=48):
    yy, xx = np.mgrid[0:h, 0:w]
    frames = []
    for k in range(t):  # smooth moving pattern: chroma subsampling keeps it close
        f = np.stack([128 + 100 * np.sin((xx + k) / 6), 128 + 100 * np.cos(yy / 5), 64 + xx * 2], -1)
        frames.append(np.clip(f, 0, 255).astype(np.uint8))
    return np.stack(frames)


def test_mp4_round_trip_streams_frames(tmp_path):
    clip = _clip()
    p = media.write_mp4(tmp_path / "c.mp4", clip, fps=8, crf=10)
    info = media.probe_video(p)
    assert (info.width, info.height, round(info.fps)) == (48, 32, 8)
    reader = media.VideoReader(p)
    frames = list(reader)
    assert len(frames) == 10 and frames[0].shape == (32, 48, 3)
    assert np.abs(frames[3].astype(int) - clip[3]).mean() < 20
    assert len(list(media.VideoReader(p, max_frames=4))) == 4


@pytest.mark.parametrize("ext,args", [("mov", ["-c:v", "libx264"]), ("avi", ["-c:v", "mjpeg"]),
                                      ("mkv", ["-c:v", "libx264"]), ("webm", ["-c:v", "libvpx"])])
def test_other_containers(tmp_path, ext, args):
    src = media.write_mp4(tmp_path / "c.mp4", _clip(), fps=8)
    dst = media.transcode(src, tmp_path / f"c.{ext}", args=args)
    assert media.sniff(dst) == "video"
    assert len(list(media.VideoReader(dst))) >= 8


def test_odd_sizes_are_padded(tmp_path):
    p = media.write_mp4(tmp_path / "odd.mp4", _clip(h=31, w=45), fps=8)
    assert media.probe_video(p).width == 46


def test_limits_refuse_before_decoding(tmp_path, photo, monkeypatch):
    p = media.write_png(tmp_path / "a.png", photo)
    with pytest.raises(MediaError, match="megapixel"):
        media.read_image(p, max_pixels=1000)
    v = media.write_mp4(tmp_path / "c.mp4", _clip(), fps=8)
    with pytest.raises(MediaError, match="limit"):
        media.VideoReader(v, max_duration=0.5)
