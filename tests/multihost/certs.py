"""A throwaway CA and one certificate per host, made with the openssl CLI at test time.

Nothing here is committed: the keys live in the run's temporary directory and die with it.
Each host certificate names the host's LAN address (IP SAN), which is what clients dial.
"""

from __future__ import annotations

import subprocess
from pathlib import Path


def _openssl(*args: str, cwd: Path) -> None:
    r = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise RuntimeError(f"openssl {args[0]}: {r.stderr.strip()}")


def make_ca(dir: Path) -> Path:
    """A self-signed CA (EC P-256, one day); returns the CA certificate's path."""
    dir.mkdir(parents=True, exist_ok=True)
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "ca.key", cwd=dir)
    _openssl(
        "req", "-x509", "-new", "-key", "ca.key", "-sha256", "-days", "1",
        "-subj", "/CN=corral multihost test CA", "-out", "ca.pem", cwd=dir,
    )  # fmt: skip
    return dir / "ca.pem"


def make_cert(dir: Path, name: str, ip: str) -> tuple[Path, Path]:
    """A certificate for ``ip`` signed by the CA in ``dir``; returns (cert, key) paths."""
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", f"{name}.key", cwd=dir)
    _openssl("req", "-new", "-key", f"{name}.key", "-subj", f"/CN={name}", "-out", f"{name}.csr", cwd=dir)
    (dir / f"{name}.ext").write_text(
        f"subjectAltName=IP:{ip}\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n"
        "extendedKeyUsage=serverAuth\n"
    )
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-days", "1", "-sha256", "-extfile", f"{name}.ext", "-out", f"{name}.pem", cwd=dir,
    )  # fmt: skip
    (dir / f"{name}.key").chmod(0o600)
    return dir / f"{name}.pem", dir / f"{name}.key"
