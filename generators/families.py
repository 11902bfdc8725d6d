"""Imports every family module so that its @register runs. Add new families here."""

from . import vae  # noqa: F401
