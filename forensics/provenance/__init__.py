"""C2PA provenance: local keys and trust anchors, signing, verification, durable credentials.

- keys.py: a local root CA and an ES256 signing certificate fit for C2PA (0600, never in the
  repository), and configurable trust anchors.
- sign.py: `c2pa.created` (trainedAlgorithmicMedia, bank outputs) or `c2pa.edited` (parent as
  ingredient) manifests for JPEG, PNG, WebP and MP4, with a watermark soft binding.
- verify.py: validation state, every status code explained, signer, actions, ingredients, and
  recovery of a stripped copy's manifest through the watermark.
- store.py: the SQLite manifest store the watermark's binding id indexes.
- softbinding.py: the adapter to the post-hoc watermark.

Reference: C2PA Technical Specification 2.x (c2pa.org/specifications), c2pa-python.
"""

from .keys import config_dir, init_keys, load_anchors, load_keys  # noqa: F401
