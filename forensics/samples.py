"""Re-make the bundled sample media that `make demo` scores (python -m forensics.samples).

- real_photo.png: a 128x128 native-resolution crop of a *test-split* photo (never trained on);
- vae_sample.png: one 32x32 sample of the shipped VAE (seed 7);
- real_clip.mp4: a virtual-camera clip (16 frames, 96x96, H.264) over a test-split photo.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from generators import base

from . import media, realdata

SAMPLES = Path(__file__).resolve().parent / "samples"


def main() -> None:
    SAMPLES.mkdir(exist_ok=True)
    photo = realdata._load_source("sklearn:flower.jpg")
    media.write_png(SAMPLES / "real_photo.png", photo[150:278, 250:378])
    vae = base.load("vae")
    x = vae.sample(1, generator=torch.Generator().manual_seed(7))
    media.write_png(SAMPLES / "vae_sample.png", base.to_uint8(x)[0])
    clip = realdata.virtual_camera_clip(realdata._load_source("skimage:coffee"),
                                        np.random.default_rng(11), frames=16, size=96)
    media.write_mp4(SAMPLES / "real_clip.mp4", clip, fps=8, crf=20)
    for f in sorted(SAMPLES.iterdir()):
        print(f)


if __name__ == "__main__":
    main()
