"""Metadata and compression forensics (forensics/metadata.py) on files the tests write."""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from forensics import detect, media, metadata as md
from forensics.errors import MediaError

A1111 = ("a watercolor fox in the snow, highly detailed\n"
         "Negative prompt: blurry, lowres\n"
         'Steps: 28, Sampler: DPM++ 2M Karras, CFG scale: 6.5, Seed: 1234567, Size: 512x768, '
         'Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Lora hashes: "fox: 1a2b, snow: 3c4d", '
         "Version: v1.7.0")
COMFY_PROMPT = {
    "3": {"class_type": "KSampler", "inputs": {"seed": 42, "steps": 20, "cfg": 7.5, "sampler_name": "euler",
                                               "scheduler": "normal", "denoise": 1.0, "model": ["4", 0]}},
    "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd_xl_base_1.0.safetensors"}},
    "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a lighthouse", "clip": ["4", 1]}},
    "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
    "9": {"class_type": "SaveImage", "inputs": {"images": ["8", 0], "filename_prefix": "ComfyUI"}},
}
COMFY_WORKFLOW = {"last_node_id": 9, "nodes": [{"id": 3, "type": "KSampler"}, {"id": 4, "type": "CheckpointLoaderSimple"},
                                               {"id": 9, "type": "SaveImage"}], "links": [], "version": 0.4}
DST = "http://cv.iptc.org/newscodes/digitalsourcetype/"


def xmp_packet(dst: str, element: bool = False) -> bytes:
    ns = ('xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" '
          'xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/" xmlns:xmp="http://ns.adobe.com/xap/1.0/"')
    if element:
        desc = (f'<rdf:Description rdf:about=""><Iptc4xmpExt:DigitalSourceType>{DST}{dst}'
                f"</Iptc4xmpExt:DigitalSourceType><xmp:CreatorTool>TestTool 1.0</xmp:CreatorTool></rdf:Description>")
    else:
        desc = f'<rdf:Description rdf:about="" Iptc4xmpExt:DigitalSourceType="{DST}{dst}" xmp:CreatorTool="TestTool 1.0"/>'
    return (f'<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?><x:xmpmeta xmlns:x="adobe:ns:meta/">'
            f"<rdf:RDF {ns}>{desc}</rdf:RDF></x:xmpmeta><?xpacket end=\"w\"?>").encode("utf-8")


@pytest.fixture(scope="module")
def scene() -> np.ndarray:
    """A real photo, downscaled so that any JPEG history of the bundled file is gone."""
    from forensics import realdata

    img = realdata._load_source("skimage:chelsea")
    return cv2.resize(img, None, fx=0.8, fy=0.8, interpolation=cv2.INTER_AREA)


def save_png(path: Path, rgb: np.ndarray, texts: dict[str, str] | None = None, itxt: dict[str, str] | None = None) -> Path:
    info = PngImagePlugin.PngInfo()
    for k, v in (texts or {}).items():
        info.add_text(k, v)
    for k, v in (itxt or {}).items():
        info.add_itxt(k, v, zip=True)
    Image.fromarray(rgb).save(path, pnginfo=info)
    return path


def jpeg_bytes(rgb: np.ndarray, q: int, encoder: str = "pillow", **kw) -> bytes:
    if encoder == "opencv":
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, q])
        assert ok
        return buf.tobytes()
    b = io.BytesIO()
    Image.fromarray(rgb).save(b, "JPEG", quality=q, **kw)
    return b.getvalue()


def by_name(meta: dict, name: str) -> dict:
    hits = [s for s in meta["signatures"] if s["signature"] == name]
    assert hits, f"no {name} in {[s['signature'] for s in meta['signatures']]}"
    return hits[0]


# ---------------------------------------------------------------------------------------------
# Generator signatures


def test_a1111_parameters_png_is_decisive(tmp_path, scene):
    f = save_png(tmp_path / "sd.png", scene[:64, :64], {"parameters": A1111})
    meta = md.analyze(f)
    s = by_name(meta, "a1111-parameters")
    assert s["field"] == "PNG tEXt chunk 'parameters'" and s["decisive"] and s["indicates"] == "synthetic"
    d = s["details"]
    assert (d["steps"], d["sampler"], d["seed"], d["cfg_scale"]) == (28, "DPM++ 2M Karras", 1234567, 6.5)
    assert d["model"] == "v1-5-pruned-emaonly" and d["size"] == "512x768"
    assert d["prompt"].startswith("a watercolor fox") and d["negative_prompt"] == "blurry, lowres"
    assert d["other_settings"]["Lora hashes"] == "fox: 1a2b, snow: 3c4d"   # a quoted value with commas
    assert meta["decisive"]["verdict"] == "synthetic" and "parameters" in meta["decisive"]["reason"]
    assert meta["warnings"] == []


def test_a1111_parameters_in_jpeg_exif_usercomment(tmp_path, scene):
    exif = Image.Exif()
    ifd = exif.get_ifd(0x8769)
    ifd[0x9286] = b"UNICODE\x00" + A1111.encode("utf-16-be")   # how A1111 saves JPEG / WebP
    f = tmp_path / "sd.jpg"
    f.write_bytes(jpeg_bytes(scene[:64, :64], 90, exif=exif))
    s = by_name(md.analyze(f), "a1111-parameters")
    assert s["field"] == "EXIF UserComment" and s["details"]["steps"] == 28


def test_comfyui_prompt_and_workflow_chunks(tmp_path, scene):
    f = save_png(tmp_path / "comfy.png", scene[:64, :64],
                 {"prompt": json.dumps(COMFY_PROMPT), "workflow": json.dumps(COMFY_WORKFLOW)})
    meta = md.analyze(f)
    p = by_name(meta, "comfyui-prompt")
    assert p["decisive"] and p["field"] == "PNG tEXt chunk 'prompt'"
    assert p["details"]["models"] == ["sd_xl_base_1.0.safetensors"]
    assert p["details"]["samplers"][0]["seed"] == 42 and "KSampler" in p["details"]["node_types"]
    w = by_name(meta, "comfyui-workflow")
    assert w["details"]["nodes"] == 3
    assert meta["decisive"]["verdict"] == "synthetic"


def test_novelai_and_software_names(tmp_path, scene):
    comment = json.dumps({"prompt": "x", "steps": 28, "sampler": "k_euler", "seed": 7, "scale": 5.0})
    f = save_png(tmp_path / "nai.png", scene[:64, :64],
                 {"Software": "NovelAI", "Source": "NovelAI Diffusion V3", "Comment": comment,
                  "Description": "a castle. Job ID: 0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b"})
    meta = md.analyze(f)
    assert by_name(meta, "generator-name:NovelAI")["field"] == "PNG tEXt chunk 'Software'"
    assert by_name(meta, "generation-parameters-json")["details"]["steps"] == 28
    assert not by_name(meta, "midjourney-job-id")["decisive"]
    assert meta["decisive"]


@pytest.mark.parametrize("element", [False, True])
def test_xmp_digital_source_type_in_jpeg(tmp_path, scene, element):
    f = tmp_path / "gen.jpg"
    f.write_bytes(jpeg_bytes(scene[:64, :64], 90, xmp=xmp_packet("trainedAlgorithmicMedia", element)))
    meta = md.analyze(f)
    s = by_name(meta, "iptc:trainedAlgorithmicMedia")
    assert s["field"] == "XMP Iptc4xmpExt:DigitalSourceType" and s["decisive"]
    assert meta["xmp"]["xmp:CreatorTool"] == "TestTool 1.0"
    assert meta["decisive"]["verdict"] == "synthetic"


def test_xmp_in_png_itxt_and_capture_types_not_decisive(tmp_path, scene):
    f = save_png(tmp_path / "cap.png", scene[:64, :64],
                 itxt={"XML:com.adobe.xmp": xmp_packet("digitalCapture").decode()})
    meta = md.analyze(f)
    s = by_name(meta, "iptc:digitalCapture")
    assert s["indicates"] == "capture" and not s["decisive"] and meta["decisive"] is None
    f2 = save_png(tmp_path / "comp.png", scene[:64, :64],
                  itxt={"XML:com.adobe.xmp": xmp_packet("compositeWithTrainedAlgorithmicMedia").decode()})
    assert md.analyze(f2)["decisive"]["verdict"] == "synthetic"


def test_exif_camera_evidence(tmp_path, scene):
    exif = Image.Exif()
    exif[0x010F], exif[0x0110], exif[0x0131] = "Canon", "Canon EOS 5D Mark IV", "Firmware 1.0.3"
    ifd = exif.get_ifd(0x8769)
    ifd[0x829A], ifd[0x829D], ifd[0x8827], ifd[0x920A] = 1 / 250, 2.8, 400, 50.0
    ifd[0xA434] = "EF50mm f/1.8 STM"
    from PIL import ImageCms

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    f = tmp_path / "camera.jpg"
    f.write_bytes(jpeg_bytes(scene, 92, exif=exif, icc_profile=icc))
    meta = md.analyze(f)
    cam = meta["camera"]
    assert (cam["make"], cam["model"], cam["lens"]) == ("Canon", "Canon EOS 5D Mark IV", "EF50mm f/1.8 STM")
    assert cam["exposure_time"] == "1/250" and cam["f_number"] == 2.8 and cam["iso"] == 400
    assert "forge" in cam["caveat"] or "copy" in cam["caveat"]
    assert meta["decisive"] is None and meta["jpeg"]["quality"]["estimate"] == 92
    assert meta["exif"]["Make"] == "Canon"
    assert meta["icc"]["description"] == "sRGB built-in" and meta["icc"]["colour_space"] == "RGB"


def test_gif_comment_and_webp_metadata(tmp_path, scene):
    f = tmp_path / "a.gif"
    Image.fromarray(scene[:32, :32]).save(f, comment=b"made with Midjourney v6")
    meta = md.analyze(f)
    assert meta["gif"]["comment"] == "made with Midjourney v6"
    f2 = tmp_path / "a.webp"
    exif = Image.Exif()
    exif[0x010F] = "Prompt:" + json.dumps(COMFY_PROMPT)   # ComfyUI's WebP saver
    Image.fromarray(scene[:32, :32]).save(f2, "WEBP", exif=exif, xmp=xmp_packet("trainedAlgorithmicMedia"))
    meta2 = md.analyze(f2)
    assert by_name(meta2, "comfyui-prompt")["field"] == "EXIF Make" and "camera" not in meta2
    assert by_name(meta2, "iptc:trainedAlgorithmicMedia")["decisive"]
    assert "EXIF" in meta2["webp"]["chunks"]


def test_c2pa_presence_png_chunk(tmp_path, scene):
    """A caBX chunk is reported as C2PA; its claimed source type is read (unverified)."""
    f = save_png(tmp_path / "c.png", scene[:32, :32])
    data = f.read_bytes()
    payload = b"\x00\x00\x00\x20jumb\x00\x00\x00\x18jumdc2pa" + f"{DST}trainedAlgorithmicMedia OpenAI".encode()
    chunk = struct.pack(">I", len(payload)) + b"caBX" + payload + struct.pack(">I", zlib.crc32(b"caBX" + payload))
    f.write_bytes(data[:33] + chunk + data[33:])
    meta = md.analyze(f)
    assert meta["c2pa"]["present"] and meta["c2pa"]["where"] == ["PNG caBX chunk"]
    assert meta["c2pa"]["digital_source_types"] == ["trainedAlgorithmicMedia"]
    assert "OpenAI (DALL·E / ChatGPT)" in meta["c2pa"]["generator_names"]
    assert by_name(meta, "iptc:trainedAlgorithmicMedia")["field"].startswith("C2PA manifest")


# ---------------------------------------------------------------------------------------------
# JPEG quantization, double compression, ELA


def test_dqt_parse_matches_pillow_and_ijg(scene):
    data = jpeg_bytes(scene[:64, :64], 50)
    t = md.jpeg_quant_tables(data)
    pil = Image.open(io.BytesIO(data)).quantization
    assert t[0].tolist() == list(pil[0]) and t[1].tolist() == list(pil[1])
    assert (t[0] == md.STD_LUMA).all() and (t[1] == md.STD_CHROMA).all()    # q50 = Annex K
    assert md.ZIGZAG[:6].tolist() == [0, 1, 8, 16, 9, 2] and sorted(md.ZIGZAG.tolist()) == list(range(64))


@pytest.mark.parametrize("encoder", ["pillow", "opencv"])
def test_quality_estimate_within_5(scene, encoder):
    for q in (50, 63, 75, 88, 97, 100):
        est = md.estimate_quality(*[md.jpeg_quant_tables(jpeg_bytes(scene[:64, :64], q, encoder))[k] for k in (0, 1)])
        assert abs(est["estimate"] - q) <= 5, (encoder, q, est)
        assert "IJG" in est["tables"]


def test_non_ijg_tables_get_closest_quality(scene):
    luma = np.clip(np.round(md.ijg_table(80) * np.linspace(0.8, 1.25, 64)), 1, 255).astype(int)
    chroma = md.ijg_table(80, md.STD_CHROMA)
    b = io.BytesIO()
    Image.fromarray(scene[:64, :64]).save(b, "JPEG", qtables=[luma.tolist(), chroma.tolist()])  # no quality=: unscaled
    data = b.getvalue()
    est = md.estimate_quality(*[md.jpeg_quant_tables(data)[k] for k in (0, 1)])
    assert not est["luma"]["ijg_exact"] and "non-IJG" in est["tables"]
    assert abs(est["estimate"] - 80) <= 5


def _decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def test_double_jpeg_detected_vs_single(scene):
    for q2, q1 in ((90, 60), (85, 50)):
        single = jpeg_bytes(scene, q2)
        double = jpeg_bytes(_decode(jpeg_bytes(scene, q1, "opencv")), q2)
        rs = md.double_jpeg_test(_decode(single), md.jpeg_quant_tables(single)[0])
        rd = md.double_jpeg_test(_decode(double), md.jpeg_quant_tables(double)[0])
        assert rs["detected"] is False and rd["detected"] is True, (q1, q2, rs, rd)
        assert abs(rd["primary_quality_estimate"] - q1) <= 5


def test_double_jpeg_in_analyze_and_small_images(tmp_path, scene):
    f = tmp_path / "resaved.jpg"
    f.write_bytes(jpeg_bytes(_decode(jpeg_bytes(scene, 55)), 90))
    dc = md.analyze(f)["jpeg"]["double_compression"]
    assert dc["detected"] and dc["score"] > dc["threshold"]
    tiny = tmp_path / "tiny.jpg"
    tiny.write_bytes(jpeg_bytes(scene[:40, :40], 90))
    assert md.analyze(tiny)["jpeg"]["double_compression"]["detected"] is None


def test_ela_map(scene):
    ela = md.ela_map(scene)
    assert ela.shape == scene.shape[:2] and ela.dtype == np.float32 and ela.min() >= 0
    resaved = _decode(jpeg_bytes(scene, md.ELA_QUALITY, "opencv"))
    noisy = np.clip(scene.astype(int) + np.random.default_rng(0).integers(-20, 21, scene.shape), 0, 255).astype(np.uint8)
    assert md.ela_map(resaved).mean() < md.ela_map(noisy).mean()
    assert md.ela_image(ela).shape == (*scene.shape[:2], 3)


# ---------------------------------------------------------------------------------------------
# Video atoms


def test_mp4_from_our_encoder_shows_encoder(tmp_path):
    frames = np.random.default_rng(0).integers(0, 255, (6, 32, 48, 3), dtype=np.uint8)
    f = media.write_mp4(tmp_path / "clip.mp4", frames, fps=6)
    meta = md.analyze(f)
    cont = meta["container"]
    assert cont["encoder"].startswith("Lavf")
    assert any(e.startswith("x264 - core") for e in cont["encoder_strings"])
    tr = cont["tracks"][0]
    assert tr["handler"] == "vide" and tr["codec"] == "avc1" and (tr["width"], tr["height"]) == (48, 32)
    assert cont["major_brand"] == "isom" and meta["warnings"] == [] and meta["decisive"] is None
    # QuickTime `keys` metadata as phones write it: camera evidence for video
    mov = media.transcode(f, tmp_path / "phone.mov", args=[
        "-c", "copy", "-metadata", "com.apple.quicktime.make=Apple", "-metadata", "com.apple.quicktime.model=iPhone 15",
        "-movflags", "use_metadata_tags"])
    m2 = md.analyze(mov)
    assert m2["format"] == "mov" and (m2["camera"]["make"], m2["camera"]["model"]) == ("Apple", "iPhone 15")
    assert all(k.isprintable() for k in m2["container"]["tags"]) and m2["warnings"] == []


# ---------------------------------------------------------------------------------------------
# Malformed metadata: warnings, never exceptions


def test_malformed_exif_gives_warning(tmp_path, scene):
    f = tmp_path / "badexif.jpg"
    f.write_bytes(jpeg_bytes(scene[:64, :64], 90, exif=b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\xff\xff\x01"))
    meta = md.analyze(f)
    assert any("EXIF" in w for w in meta["warnings"]) and meta["jpeg"]["quality"]["estimate"] == 90
    f2 = tmp_path / "badexif.webp"
    Image.fromarray(scene[:32, :32]).save(f2, "WEBP", exif=b"Exif\x00\x00garbage")
    assert any("EXIF" in w for w in md.analyze(f2)["warnings"])


def test_malformed_xmp_gives_warning(tmp_path, scene):
    broken = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF>' + f"{DST}trainedAlgorithmicMedia".encode()
    f = tmp_path / "badxmp.jpg"
    f.write_bytes(jpeg_bytes(scene[:64, :64], 90, xmp=broken))
    meta = md.analyze(f)
    assert any(w.startswith("XMP: malformed") for w in meta["warnings"])
    s = by_name(meta, "iptc:trainedAlgorithmicMedia")           # still reported, never decisive
    assert not s["decisive"] and "raw text match" in s["field"] and meta["decisive"] is None
    bomb = (b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;">]>'
            b'<x:xmpmeta xmlns:x="adobe:ns:meta/">&b;</x:xmpmeta>')
    f2 = tmp_path / "bomb.jpg"
    f2.write_bytes(jpeg_bytes(scene[:64, :64], 90, xmp=bomb))
    assert any(w.startswith("XMP: malformed") for w in md.analyze(f2)["warnings"])


def _png_with_chunk(base: bytes, ctype: bytes, payload: bytes, crc: int | None = None, length: int | None = None) -> bytes:
    crc = zlib.crc32(ctype + payload) if crc is None else crc
    chunk = struct.pack(">I", len(payload) if length is None else length) + ctype + payload + struct.pack(">I", crc)
    return base[:33] + chunk + base[33:]


def test_malformed_png_chunks_give_warnings(tmp_path, scene):
    base = save_png(tmp_path / "base.png", scene[:32, :32]).read_bytes()
    cases = {
        "crc": _png_with_chunk(base, b"tEXt", b"parameters\x00Steps: 5, Seed: 1", crc=0),
        "bomb": _png_with_chunk(base, b"zTXt", b"Comment\x00\x00" + zlib.compress(b"\x00" * (48 * 1024**2), 9)),
        "itxt": _png_with_chunk(base, b"iTXt", b"prompt\x00\x01\x00en\x00\x00not zlib at all"),
        "nokey": _png_with_chunk(base, b"tEXt", b"no separator here"),
        "length": _png_with_chunk(base, b"tEXt", b"k\x00v", length=10**9),
        "badjson": _png_with_chunk(base, b"tEXt", b'prompt\x00{"3": {"class_type": '),
        "noparse": _png_with_chunk(base, b"tEXt", b"parameters\x00just a prompt, no settings"),
        "exif": _png_with_chunk(base, b"eXIf", b"MM\x00*garbage"),
        "trailing": base + b"appended payload",
    }
    for name, data in cases.items():
        f = tmp_path / f"{name}.png"
        f.write_bytes(data)
        meta = md.analyze(f)
        assert meta["warnings"], name
        assert meta["decisive"] is None, name
    assert any("over" in w for w in md.analyze(tmp_path / "bomb.png")["warnings"])


def test_malformed_mp4_atoms_give_warnings(tmp_path):
    frames = np.random.default_rng(1).integers(0, 255, (4, 32, 32, 3), dtype=np.uint8)
    good = media.write_mp4(tmp_path / "ok.mp4", frames).read_bytes()
    i = good.index(b"mvhd")
    bad_size = good[:i - 4] + struct.pack(">I", 0x7FFFFFF0) + good[i:]
    j = good.index(b"hdlr")
    bad_inner = good[:j - 4] + struct.pack(">I", 3) + good[j:]
    for name, data in {"size": bad_size, "inner": bad_inner, "truncated": good[: len(good) // 3]}.items():
        f = tmp_path / f"{name}.mp4"
        f.write_bytes(data)
        meta = md.analyze(f)
        assert meta["warnings"], name


def test_random_corruption_never_raises(tmp_path, scene):
    """Flip bytes in metadata-rich files: only warnings (or a MediaError for a non-media file)."""
    rng = np.random.default_rng(0)
    exif = Image.Exif()
    exif[0x010F] = "Canon"
    sources = {
        "png": save_png(tmp_path / "src.png", scene[:32, :32], {"parameters": A1111},
                        {"XML:com.adobe.xmp": xmp_packet("digitalCapture").decode()}).read_bytes(),
        "jpg": jpeg_bytes(scene[:32, :32], 80, exif=exif, xmp=xmp_packet("trainedAlgorithmicMedia")),
        "mp4": media.write_mp4(tmp_path / "src.mp4", scene[None, :32, :32].repeat(2, 0)).read_bytes(),
    }
    for ext, data in sources.items():
        for k in range(25):
            b = bytearray(data)
            for pos in rng.integers(8, min(len(b), 1500), size=1 + k % 6):
                b[pos] = int(rng.integers(0, 256))
            if k % 5 == 4:
                b = b[: int(rng.integers(16, len(b)))]
            f = tmp_path / f"fuzz{k}.{ext}"
            f.write_bytes(bytes(b))
            try:
                meta = md.analyze(f)
            except MediaError:
                continue
            json.dumps(meta)
            assert isinstance(meta["warnings"], list)


# ---------------------------------------------------------------------------------------------
# Integration: detect JSON, --report, the CLI


def _frequency_checkpoint(d: Path) -> Path:
    """A frequency detector with zero weights (p = 0.5): the verdict can only come from metadata."""
    from forensics.detectors import frequency

    n = frequency.features(np.zeros((1, 32, 32, 3), np.uint8)).shape[1]
    det = frequency.FrequencyDetector({"patch": 32, "classes": ["real", "x"], "calibration": [1.0, 0.0],
                                       "threshold": 0.5},
                                      {"mean": np.zeros(n, np.float32), "scale": np.ones(n, np.float32),
                                       "coef": np.zeros(n, np.float32), "intercept": np.zeros(1, np.float32)})
    return det.save(d / "frequency")


def test_detect_file_metadata_block_and_report(tmp_path, scene):
    from forensics.detectors import base as dbase

    det = dbase.load(_frequency_checkpoint(tmp_path))
    f = save_png(tmp_path / "sd.png", scene[:64, :64], {"parameters": A1111})
    r = detect.detect_file(f, {"frequency": det}, report_dir=tmp_path / "rep")
    assert r["verdict"] == "synthetic" and r["verdict_detectors"] == "uncertain"
    assert "a1111-parameters" in r["reason"] and r["p_synthetic"] == 0.5
    assert r["metadata"]["signatures"][0]["field"] == "PNG tEXt chunk 'parameters'"
    rep = r["report"]
    assert Path(rep["ela"]).is_file() and media.read_image(rep["ela"]).shape[:2] == (64, 64)
    page = Path(rep["metadata_html"]).read_text()
    assert "a1111-parameters" in page and "<script" not in page
    saved = json.loads(Path(rep["json"]).read_text())
    assert saved["metadata"]["ela"]["quality"] == md.ELA_QUALITY

    # camera JPEG, metadata only (no detector): camera evidence and the estimated quality
    exif = Image.Exif()
    exif[0x010F], exif[0x0110] = "NIKON CORPORATION", "NIKON D750"
    cam = tmp_path / "cam.jpg"
    cam.write_bytes(jpeg_bytes(scene, 87, exif=exif))
    r2 = detect.detect_file(cam, {})
    assert r2["verdict"] == "uncertain" and r2["p_synthetic"] is None
    assert r2["metadata"]["camera"]["model"] == "NIKON D750"
    assert r2["metadata"]["jpeg"]["quality"]["estimate"] == 87
    # HTML escapes hostile metadata
    x = save_png(tmp_path / "x.png", scene[:32, :32], {"Comment": "<script>alert(1)</script>"})
    r3 = detect.detect_file(x, {"frequency": det}, report_dir=tmp_path / "rep")
    assert "<script>" not in Path(r3["report"]["metadata_html"]).read_text()


def test_cli_detect_json_reports_signature(tmp_path, scene, monkeypatch, capsys):
    import cli
    from forensics.detectors import base as dbase

    root = tmp_path / "ckpt"
    _frequency_checkpoint(root)
    monkeypatch.setattr(dbase, "CHECKPOINT_ROOT", root)
    f = save_png(tmp_path / "sd.png", scene[:64, :64], {"parameters": A1111})
    assert cli.main(["detect", "--json", str(f)]) == 0
    r = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert r["verdict"] == "synthetic" and "decisive metadata signature" in r["reason"]
    assert r["metadata"]["signatures"][0]["details"]["seed"] == 1234567
    assert cli.main(["detect", str(f)]) == 0
    human = capsys.readouterr().out
    assert human.split()[0] == "synthetic" and "decisive metadata signature" in human


def test_audit_reports_metadata_and_decisive_signature(tmp_path):
    """`audit` JSON carries the metadata block; an A1111 chunk decides the verdict even with no detectors."""
    import numpy as np
    from PIL import Image, PngImagePlugin

    from forensics.audit import Auditor

    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "a cat\nNegative prompt: dog\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 42, Model: sd15")
    p = tmp_path / "sd.png"
    Image.fromarray(np.full((64, 64, 3), 120, np.uint8)).save(p, pnginfo=info)
    auditor = Auditor(detectors=None, keys_dir=tmp_path / "keys")
    auditor.detectors, auditor.detector_note = {}, "detectors skipped for this test"
    r = auditor.audit(p)
    assert r["metadata"]["decisive"] and r["summary"]["verdict"] == "synthetic"
    assert "parameters" in r["summary"]["basis"]
