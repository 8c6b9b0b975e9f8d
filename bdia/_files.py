"""File helpers shared by the commands that write results: content digests and an early writability check."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

PACKAGE = Path(__file__).parent


def sha256_file(path) -> str:
    """The sha256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def code_digest(names) -> str:
    """One digest of the library files ``names`` (paths relative to the package): results made by other code differ."""
    return hashlib.sha256("".join(sha256_file(PACKAGE / name) for name in names).encode()).hexdigest()


def check_writable(folder, what: str) -> None:
    """Create ``folder`` and write a probe file in it, before any long work; ``OSError("cannot write {what}: ...")``."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".bdia-write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise OSError(f"cannot write {what}: {error.strerror or error}") from error
