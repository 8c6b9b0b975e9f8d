"""File helpers shared by the applications that write results: content digests and an early writability check."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from ..errors import NotWritableError

#: the bdia package folder
PACKAGE = Path(__file__).resolve().parents[1]


def sha256_file(path) -> str:
    """The sha256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def code_digest() -> str:
    """One digest of every Python file of the bdia package (paths and contents): results made by other code differ."""
    digest = hashlib.sha256()
    for path in sorted(PACKAGE.rglob("*.py")):
        if "__pycache__" not in path.parts:
            digest.update(str(path.relative_to(PACKAGE)).encode() + b"\0" + sha256_file(path).encode())
    return digest.hexdigest()


def check_writable(folder, what: str) -> None:
    """Create ``folder`` and write a probe file in it, before any long work; :class:`~bdia.errors.NotWritableError`
    (``"cannot write {what}: ..."``) otherwise."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".bdia-write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise NotWritableError(f"cannot write {what}: {error.strerror or error}") from error
