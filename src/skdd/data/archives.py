"""Reading tar archives in memory, safely: nothing is extracted to disk, and any member that is a link,
a special file, or whose path leaves the archive root (absolute, `..`) makes the whole archive refused.

Compressed streams are decompressed by gzip/bz2/lzma themselves (not tarfile's streaming mode), so a
truncated archive is an error instead of silently a shorter archive.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import tarfile
import zlib
from pathlib import Path
from typing import Callable

from skdd.errors import SkddError, one_line

def _member_parts(member: tarfile.TarInfo, archive: Path) -> tuple[str, ...]:
    """The member's path parts; refuse one that could leave the archive root: absolute, `..`, link, special."""
    name = member.name
    parts = tuple(p for p in name.replace("\\", "/").split("/") if p not in ("", "."))
    if name.startswith(("/", "\\")) or ".." in parts or (len(name) > 1 and name[1] == ":"):
        raise SkddError(f"{archive}: refusing archive member {name!r}: its path leaves the archive root")
    if member.issym() or member.islnk():
        raise SkddError(f"{archive}: refusing archive member {name!r}: links are not allowed ({member.linkname!r})")
    if not (member.isreg() or member.isdir()):
        raise SkddError(f"{archive}: refusing archive member {name!r}: not a regular file or folder")
    return parts


class _EndAwareTarInfo(tarfile.TarInfo):
    """Records why tarfile stopped: only a zero block is a proper end (tarfile ignores the other causes)."""

    @classmethod
    def fromtarfile(cls, tf):
        try:
            return super().fromtarfile(tf)
        except tarfile.HeaderError as err:
            tf.skdd_stop = err
            raise


def _decompressed(raw) -> io.IOBase:
    """A reader of the tar bytes inside `raw`: gzip/bzip2/xz by magic number, else `raw` itself.

    These readers raise on a truncated stream and check gzip's CRC, which tarfile's own stream mode
    does not (a cut-short .tar.gz would otherwise read as a smaller, valid archive).
    """
    magic = raw.read(6)
    raw.seek(0)
    if magic[:2] == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if magic[:3] == b"BZh":
        return bz2.BZ2File(raw)
    if magic == b"\xfd7zXZ\x00":
        return lzma.LZMAFile(raw)
    return raw


def iter_tar_files(archive: Path, want: Callable[[tuple[str, ...]], bool]):
    """Stream a tar archive front to back; yield (path parts, bytes) of the regular files `want` accepts.

    Nothing is written to disk. Every member is checked (see `_member_parts`), so an unsafe member
    anywhere refuses the archive; a damaged header, a missing end-of-archive block or a truncated or
    corrupt compressed stream is an error too, not a silently shorter archive.
    """
    try:
        with open(archive, "rb") as raw, _decompressed(raw) as stream:
            with tarfile.open(fileobj=stream, mode="r|", tarinfo=_EndAwareTarInfo) as tf:
                for member in tf:
                    parts = _member_parts(member, archive)
                    if not member.isreg() or not want(parts):
                        continue
                    handle = tf.extractfile(member)
                    data = handle.read() if handle is not None else b""
                    if len(data) != member.size:
                        raise SkddError(f"{archive}: member {member.name!r} is truncated")
                    yield parts, data
                stop = getattr(tf, "skdd_stop", None)
                if not isinstance(stop, tarfile.EOFHeaderError):
                    why = " ".join(str(stop).split()) if stop else "no end-of-archive block"
                    raise SkddError(f"{archive}: truncated or damaged tar archive at byte {tf.offset} ({why})")
            while stream.read(1 << 20):  # to the end, so a cut-short or corrupt compressed stream is noticed
                pass
    except SkddError:
        raise
    except (tarfile.TarError, OSError, EOFError, zlib.error, lzma.LZMAError) as err:
        raise SkddError(f"{archive}: corrupt or unreadable archive ({one_line(err)})") from None
