"""How an artifact sits in a folder, shared by the local store and the S3 backend (which is why it is its own
module: `storage` dispatches to `s3`, and `s3` needs these without importing `storage` back).

An artifact is complete exactly when its `manifest.json` exists (written last); a stage stages its output in
`<out>.partial/` beside it, which also holds the checkpoints a re-run resumes from.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

MANIFEST = "manifest.json"
STAGING_SUFFIX = ".partial"


def swap_into_place(new: Path, final: Path) -> None:
    """Replace folder `final` by `new` with renames only: readers see the old or the new, never a mix."""
    final.parent.mkdir(parents=True, exist_ok=True)
    old = final.with_name(f"{final.name}.old-{os.getpid()}")
    if final.exists():
        os.replace(final, old)
    os.replace(new, final)
    shutil.rmtree(old, ignore_errors=True)
