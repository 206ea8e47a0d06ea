"""Secrets that the first start writes to a file (the operator token, the master key).

Replicas sharing a working directory can start at the same moment. Each must end up with the
secret the *first* writer put on disk: two master keys would seal data that the other replica
cannot open, and two operator tokens would leave one replica's token valid nowhere. A plain
O_EXCL create crashes the loser, and a truncating write lets the last writer silently replace
a secret the first one already uses. Instead the secret is written whole to a private
temporary file and hard-linked into place: the link either appears complete or fails because
the file exists, in which case the existing file is what counts.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_once(path: Path, text: str) -> tuple[str, bool]:
    """Create `path` (mode 0600) holding `text` unless it exists; returns (the file's text,
    whether this call created it). Never overwrites, never returns a half-written file. A folder
    it has to create is made 0700: it holds secrets."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o600)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return path.read_text(encoding="ascii"), False
        return text, True
    finally:
        os.unlink(tmp)
