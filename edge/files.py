"""File helpers shared by everything that writes artefacts: checksums and atomic folders."""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextmanager
def staged_dir(target: Path) -> Iterator[Path]:
    """A hidden folder beside `target` that replaces it only if the block succeeds.

    An interrupted or failed build leaves `target` as it was and no half-made folder.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    staging.chmod(0o755)
    try:
        yield staging
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def link_or_copy(src: str | Path, dst: str | Path) -> None:
    """Hard-link when the filesystem allows it (big weights cost no space), else copy; `dst` is replaced.

    An existing `dst` is unlinked first, never written into: it may itself
    be a hard link, and copying over it would change the file it shares
    (another bundle's model, or the package's own weights).
    """
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists() or dst.is_symlink():
        dst.unlink()
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
