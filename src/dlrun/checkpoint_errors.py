"""Why a file could not be read as a checkpoint, in a few words a user can act on.

``torch.load``'s own messages run to several lines of advice about ``weights_only`` (even for a file
that is no checkpoint at all) and carry ANSI escapes; cut to a length they end mid-word. Here the
file's own bytes say what it is: empty, text, random bytes, a zip without its end (truncated), a
pickle, or a real checkpoint holding objects that are not plain data.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

ZIP_MAGIC = b"PK\x03\x04"
PICKLE_PROTOCOL = 0x80  # first byte of a pickle of protocol 2 or later (old-style torch.save files too)


def describe_unreadable(path: Path, err: BaseException) -> str:
    """The fault of a file ``torch.load(path, weights_only=True)`` refused with ``err``: one short clause.

    The caller puts the key and path in front: ``ckpt=PATH: <this>``.
    """
    try:
        size = path.stat().st_size
        with open(path, "rb") as file:
            head = file.read(64)
    except OSError as os_err:
        return f"cannot read the file ({os_err.strerror or type(os_err).__name__})"
    if size == 0:
        return "empty file (0 bytes), not a checkpoint"
    if head.startswith(ZIP_MAGIC):
        if not zipfile.is_zipfile(path):
            return f"truncated or damaged checkpoint ({_bytes(size)}; the end of the zip archive is missing: was it still being written or copied?)"
        blocked = unsupported_global(err)
        if blocked:
            return f"holds Python objects, not only tensors and plain data ({blocked}); dlrun loads checkpoints with weights_only=True"
        return f"damaged checkpoint ({_bytes(size)}; {_first_sentence(err)})"
    if head[0] == PICKLE_PROTOCOL:
        blocked = unsupported_global(err)
        if blocked:
            return f"a pickle holding Python objects ({blocked}), not a checkpoint of plain data; dlrun loads checkpoints with weights_only=True"
        if isinstance(err, EOFError) or "truncated" in str(err).lower() or "ran out of input" in str(err).lower():
            return f"truncated pickle file ({_bytes(size)}), not a whole checkpoint"
        return f"not a checkpoint ({_bytes(size)} of pickle data that torch.load cannot read)"
    if _looks_like_text(head):
        return f"not a checkpoint (a text file, {_bytes(size)})"
    return f"not a checkpoint ({_bytes(size)} of neither a zip archive nor a pickle: random or foreign bytes)"


def unsupported_global(err: BaseException) -> str | None:
    """``torch.nn.modules.linear.Linear`` from torch's 'Unsupported global: GLOBAL ...' refusal, if that was it."""
    match = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(err))
    return match.group(1) if match else None


def _first_sentence(err: BaseException) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", " ".join(str(err).split())) or type(err).__name__
    return text.split(". ")[0].rstrip(".")[:200]


def _looks_like_text(head: bytes) -> bool:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(ch.isprintable() or ch in "\r\n\t" for ch in text)


def _bytes(size: int) -> str:
    return f"{size} byte{'s' if size != 1 else ''}"
