"""Every bad input of the foundation issue: exit 2, one line naming the file, no traceback,
fast; and the inputs that must work."""

import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from forensics import media

from conftest import run_cli


def _png_header(w, h):
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))


@pytest.fixture(scope="module")
def files(tmp_path_factory, photo):
    d = tmp_path_factory.mktemp("bad")
    rng = np.random.default_rng(0)
    good_png = media.write_png(d / "good.png", photo)
    Image.fromarray(photo).save(d / "good.jpg", quality=90)
    clip = media.write_mp4(d / "good.mp4", np.stack([photo[:64, :64]] * 12), fps=8)
    (d / "empty.jpg").write_bytes(b"")
    (d / "random.jpg").write_bytes(rng.bytes(5000))
    (d / "random.mp4").write_bytes(rng.bytes(5000))
    (d / "trunc.jpg").write_bytes((d / "good.jpg").read_bytes()[:700])
    (d / "trunc.png").write_bytes(good_png.read_bytes()[:300])
    # An MP4 with its index at the end (ffmpeg's default), cut in half.
    tail = media.transcode(clip, d / "tail.mp4", args=["-c:v", "libx264", "-movflags", "-faststart"])
    (d / "trunc.mp4").write_bytes(tail.read_bytes()[: tail.stat().st_size // 2])
    (d / "text.png").write_text("this is not an image\n")
    (d / "huge.png").write_bytes(_png_header(100000, 100000) + b"\x00" * 64)
    Image.fromarray(photo[:1, :1]).save(d / "one.png")
    (d / "folder").mkdir()
    audio = d / "audio.mp4"
    media.transcode(clip, audio, args=["-f", "mp4", "-map", "0:a?", "-c:a", "aac"]) if False else None
    import subprocess

    subprocess.run([media.ffmpeg_exe(), "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    "sine=frequency=440:duration=1", "-c:a", "aac", str(audio)], check=True, timeout=60)
    # Containers with a video stream that holds no frame at all
    for name, codec in (("zero.avi", "mpeg4"), ("zero.mkv", "libx264")):
        subprocess.run([media.ffmpeg_exe(), "-loglevel", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=64x64:rate=8",
                        "-frames:v", "0", "-c:v", codec, str(d / name)], check=True, timeout=60)
    # Inputs that must work
    Image.fromarray((np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)).save(d / "g16.png")
    Image.fromarray(np.dstack([photo, np.full(photo.shape[:2], 128, np.uint8)]), "RGBA").save(d / "rgba.png")
    Image.fromarray(photo[..., 0]).save(d / "gray.jpg")
    frames = [Image.fromarray(photo), Image.fromarray(photo[::-1].copy())]
    frames[0].save(d / "anim.gif", save_all=True, append_images=frames[1:], duration=100)
    media.write_mp4(d / "single.mp4", photo[None, :64, :64], fps=8)
    return d


BAD = ["empty.jpg", "random.jpg", "random.mp4", "trunc.jpg", "trunc.png", "trunc.mp4", "text.png",
       "huge.png", "one.png", "folder", "missing.png", "audio.mp4", "zero.avi", "zero.mkv"]
GOOD = ["g16.png", "rgba.png", "gray.jpg", "anim.gif", "single.mp4", "good.png", "good.jpg", "good.mp4"]


@pytest.mark.parametrize("name", BAD)
def test_bad_input_exit_2_one_line(files, name):
    # The subprocess timeout bounds a hang; speed itself is measured in bench/, not asserted here.
    r = run_cli("detect", files / name, "--json", timeout=60)
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert "Traceback" not in r.stderr and name in lines[0]
    assert r.stdout.strip() == ""


@pytest.mark.parametrize("name", GOOD)
def test_odd_but_valid_input_works(files, name):
    r = run_cli("detect", files / name, "--json", timeout=60)
    assert r.returncode == 0, r.stderr
    import json

    out = json.loads(r.stdout)
    assert out["verdict"] in ("real", "synthetic", "uncertain") and 0 <= out["p_synthetic"] <= 1


def test_usage_errors_are_one_line(files):
    for args in (["detect"], ["generate", "--arch", "nope", "--n", "1", "--out", str(files / "o")],
                 ["detect", str(files / "good.png"), "--device", "tpu"], ["frobnicate"]):
        r = run_cli(*args)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, (args, r.stderr)
