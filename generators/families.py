"""Imports every family module so that its @register runs. Add new families here."""

from . import vae  # noqa: F401
from . import diffusion  # noqa: F401
from . import latent_diffusion  # noqa: F401
from . import flow_matching  # noqa: F401
from . import gan  # noqa: F401
from . import flows  # noqa: F401
from . import tarflow  # noqa: F401
from . import autoregressive  # noqa: F401
from . import video_diffusion  # noqa: F401
from . import latent_walk  # noqa: F401
from . import hybrid  # noqa: F401
