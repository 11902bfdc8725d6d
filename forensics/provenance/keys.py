"""A local certificate authority and an ES256 signing certificate fit for C2PA, and trust anchors.

- C2PA (spec 2.x, §14 "Trust model") refuses self-signed signing certificates: the leaf must be
  issued by a CA, carry key usage `digitalSignature`, an extended key usage from the C2PA list
  (we use `emailProtection`), and authority/subject key identifiers. The chain handed to the
  signer is leaf + CA (PEM), and the private key never leaves this folder.
- Layout of the key folder (`$XDG_CONFIG_HOME/forensics`, default `~/.config/forensics`, or
  `--dir` / `--keys`): `ca.pem`, `ca.key`, `signer.pem` (leaf + CA), `signer.key`,
  `manifests.sqlite` (the soft-binding manifest store, see store.py), `watermark.key` (the
  soft-binding watermark's key, made by forensics.watermark.posthoc). The folder is 0700 and
  every file 0600; keys are written to a temp file and renamed, so a kill leaves no half key.
- Trust anchors: by default the folder's own CA, so our signatures verify as `Trusted` and
  anyone else's as `Valid` (signature fine, signer unknown). `--trust-anchors PEM` replaces
  them; `--trust-anchors none` trusts nobody.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import os
from pathlib import Path

from ..errors import ProvenanceError

CA_CERT, CA_KEY = "ca.pem", "ca.key"
SIGNER_CHAIN, SIGNER_KEY = "signer.pem", "signer.key"
STORE = "manifests.sqlite"
DEFAULT_CA_DAYS = 3650
DEFAULT_SIGNER_DAYS = 730
MAX_PEM_BYTES = 1 << 20


def config_dir() -> Path:
    """`$XDG_CONFIG_HOME/forensics`, default `~/.config/forensics`."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "forensics"


def resolve_dir(keys: str | os.PathLike | None = None) -> Path:
    return Path(keys).expanduser() if keys else config_dir()


@dataclasses.dataclass
class Keys:
    """A loaded key folder: what signing and default trust need."""

    dir: Path
    chain_pem: bytes          # leaf + CA
    key_pem: bytes            # the leaf's private key (PKCS#8)
    ca_pem: str               # the local root, our default trust anchor
    signer_name: str          # the leaf's common name
    not_after: _dt.datetime
    _signer: object = dataclasses.field(default=None, repr=False)

    @property
    def store_path(self) -> Path:
        return self.dir / STORE

    def signer(self):
        """A c2pa.Signer (built once)."""
        if self._signer is None:
            import c2pa

            info = c2pa.C2paSignerInfo(c2pa.C2paSigningAlg.ES256, self.chain_pem, self.key_pem, None)
            try:
                self._signer = c2pa.Signer.from_info(info)
            except c2pa.C2paError as exc:
                raise ProvenanceError(f"the signing key in {self.dir} is unusable ({_c2pa_reason(exc)}); "
                                      "run `forensics provenance init --force`") from None
        return self._signer


# ---------------------------------------------------------------------------------------------
# Creating


def init_keys(directory: str | os.PathLike | None = None, *, force: bool = False,
              common_name: str = "forensics local signer", organization: str = "forensics (local test CA)",
              signer_days: int = DEFAULT_SIGNER_DAYS, ca_days: int = DEFAULT_CA_DAYS,
              now: _dt.datetime | None = None) -> dict:
    """Create the CA and the signing certificate in `directory` (kept if present unless force).

    `now` shifts the validity window (tests make expired certificates with it).
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    d = resolve_dir(directory)
    _refuse_source_tree(d)
    if signer_days < 1 or ca_days < signer_days:
        raise ProvenanceError(f"validity must be ≥ 1 day and the CA's ≥ the signer's; got signer {signer_days}, CA {ca_days}")
    existing = [n for n in (CA_CERT, CA_KEY, SIGNER_CHAIN, SIGNER_KEY) if (d / n).exists()]
    if existing and not force:
        k = load_keys(d, check_expiry=False)
        return {**_describe(k, created=False), "watermark_key": _ensure_watermark_key(d)}
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(d, 0o700)

    t0 = (now or _dt.datetime.now(_dt.timezone.utc)) - _dt.timedelta(minutes=5)
    # 1. Root CA: P-256 key, self-signed, CA:true with pathlen 0, keyCertSign + cRLSign.
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "forensics local root CA"),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization)])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(t0).not_valid_after(t0 + _dt.timedelta(days=ca_days))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(_key_usage(cert_sign=True), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    # 2. Signing leaf (ES256 = ECDSA P-256 + SHA-256): digitalSignature, EKU emailProtection, AKI/SKI.
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization)])
    leaf = (x509.CertificateBuilder().subject_name(name).issuer_name(ca_name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(t0).not_valid_after(t0 + _dt.timedelta(days=signer_days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(cert_sign=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    # 3. Write: private keys first, the chain last (its presence marks a complete folder).
    _write_private(d / CA_KEY, _key_pem(ca_key))
    _write_private(d / SIGNER_KEY, _key_pem(key))
    _write_private(d / CA_CERT, _cert_pem(ca))
    _write_private(d / SIGNER_CHAIN, _cert_pem(leaf) + _cert_pem(ca))
    # 4. The soft-binding watermark key (kept across --force: marks already out stay readable).
    return {**_describe(load_keys(d, check_expiry=False), created=True), "watermark_key": _ensure_watermark_key(d)}


def _ensure_watermark_key(d: Path) -> str | None:
    """The soft-binding watermark key of the folder (kept if present); None without the watermark."""
    from . import softbinding

    if softbinding.unavailable():
        return None
    softbinding.load_key(d, create=True)
    return str(softbinding.key_path(d))


def _key_usage(cert_sign: bool):
    from cryptography import x509

    return x509.KeyUsage(digital_signature=not cert_sign, content_commitment=False, key_encipherment=False,
                         data_encipherment=False, key_agreement=False, key_cert_sign=cert_sign,
                         crl_sign=cert_sign, encipher_only=False, decipher_only=False)


def _key_pem(k) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                           serialization.NoEncryption())


def _cert_pem(c) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return c.public_bytes(serialization.Encoding.PEM)


def _write_private(path: Path, data: bytes) -> None:
    """Write 0600 through a temp file + rename; never widen permissions, never follow a link."""
    tmp = path.with_name(f".tmp-{path.name}-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _refuse_source_tree(d: Path) -> None:
    """Private keys never go inside the project's source tree (they could be committed)."""
    repo = Path(__file__).resolve().parents[2]
    if not (repo / ".git").exists():
        return
    try:
        d.resolve().relative_to(repo)
    except ValueError:
        return
    raise ProvenanceError(f"refusing to write private keys inside the source tree ({d}); "
                          "use the default config folder or --dir outside the repository")


# ---------------------------------------------------------------------------------------------
# Loading


def load_keys(directory: str | os.PathLike | None = None, *, check_expiry: bool = True) -> Keys:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    d = resolve_dir(directory)
    missing = [n for n in (CA_CERT, SIGNER_CHAIN, SIGNER_KEY) if not (d / n).is_file()]
    if missing:
        raise ProvenanceError(f"no signing keys in {d} (missing {', '.join(missing)}); "
                              "run `forensics provenance init` or pass --keys DIR")
    for n in (SIGNER_KEY, CA_KEY):
        p = d / n
        if p.exists() and p.stat().st_mode & 0o077:
            raise ProvenanceError(f"{p} is readable by others (mode {p.stat().st_mode & 0o777:o}); "
                                  f"run `chmod 600 {p}`")
    chain = _read_small(d / SIGNER_CHAIN)
    key = _read_small(d / SIGNER_KEY)
    ca = _read_small(d / CA_CERT).decode("ascii", "replace")
    try:
        certs = x509.load_pem_x509_certificates(chain)
    except ValueError:
        raise ProvenanceError(f"{d / SIGNER_CHAIN} is not a PEM certificate chain") from None
    leaf = certs[0]
    cn = leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    k = Keys(dir=d, chain_pem=chain, key_pem=key, ca_pem=ca,
             signer_name=str(cn[0].value) if cn else leaf.subject.rfc4514_string(),
             not_after=leaf.not_valid_after_utc)
    now = _dt.datetime.now(_dt.timezone.utc)
    if check_expiry and not (leaf.not_valid_before_utc <= now <= leaf.not_valid_after_utc):
        when = "expired on" if now > leaf.not_valid_after_utc else "is not valid before"
        date = leaf.not_valid_after_utc if now > leaf.not_valid_after_utc else leaf.not_valid_before_utc
        raise ProvenanceError(f"the signing certificate in {d} {when} {date:%Y-%m-%d}; "
                              "run `forensics provenance init --force` for a new one")
    return k


def _read_small(p: Path) -> bytes:
    if p.stat().st_size > MAX_PEM_BYTES:
        raise ProvenanceError(f"{p} is over {MAX_PEM_BYTES} bytes; not a PEM file")
    return p.read_bytes()


def _describe(k: Keys, created: bool) -> dict:
    return {"dir": str(k.dir), "created": created, "signer": k.signer_name,
            "ca": str(k.dir / CA_CERT), "chain": str(k.dir / SIGNER_CHAIN),
            "not_after": k.not_after.isoformat(timespec="seconds"), "store": str(k.store_path)}


def load_anchors(spec: str | os.PathLike | None, keys_dir: str | os.PathLike | None = None) -> str | None:
    """Trust anchors as PEM text: `spec` (a PEM file, or "none"), else the key folder's CA, else None."""
    from cryptography import x509

    if spec is not None and str(spec).lower() == "none":
        return None
    if spec is not None:
        p = Path(spec)
        if not p.is_file():
            raise ProvenanceError(f"--trust-anchors {p}: no such file")
        data = _read_small(p)
        try:
            x509.load_pem_x509_certificates(data)
        except ValueError:
            raise ProvenanceError(f"--trust-anchors {p}: not a PEM file of certificates") from None
        return data.decode("ascii")
    ca = resolve_dir(keys_dir) / CA_CERT
    return ca.read_text() if ca.is_file() else None


def _c2pa_reason(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200]
