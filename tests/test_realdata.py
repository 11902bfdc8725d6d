import numpy as np

from forensics import realdata


def test_bundled_photos_split_by_scene():
    srcs = realdata.bundled_sources()
    assert len(srcs) >= 15
    by_scene = {}
    for s in srcs:
        by_scene.setdefault(s.scene, set()).add(s.split)
    assert all(len(v) == 1 for v in by_scene.values()), "a scene must not span two splits"
    assert {s.split for s in srcs} == {"train", "val", "test"}


def test_crops_are_labeled_and_disjoint():
    rs = realdata.default_crops(per_source=5, seed=1)
    assert rs.images.shape[1:] == (32, 32, 3) and rs.images.dtype == np.uint8
    train = set(rs.split("train").sources)
    test = set(rs.split("test").sources)
    assert train and test and not (train & test)
    again = realdata.default_crops(per_source=5, seed=1)
    assert np.array_equal(rs.images, again.images)


def test_virtual_camera_moves():
    photo = realdata._load_source("skimage:coffee")
    clip = realdata.virtual_camera_clip(photo, np.random.default_rng(3), frames=12, size=32)
    assert clip.shape == (12, 32, 32, 3)
    diffs = [np.abs(clip[i + 1].astype(int) - clip[i]).mean() for i in range(11)]
    assert max(diffs) > 0.5  # something changes between frames


def test_user_folder_sources(tmp_path, photo):
    from forensics import media

    (tmp_path / "sub").mkdir()
    for i in range(6):
        media.write_png(tmp_path / "sub" / f"{i}.png", photo)
    srcs = realdata.folder_sources(tmp_path)
    assert len(srcs) == 6 and all(s.split in realdata.SPLITS for s in srcs)
    assert srcs == realdata.folder_sources(tmp_path)  # deterministic split
