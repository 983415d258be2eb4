"""Atomic file writing: a temporary file in the same folder, then ``os.replace``.

A reader never sees a half-written file, and an interrupted run leaves the old one.
Every command that writes a file (bench, explain, fit-kernel, check) goes through here.
"""

from __future__ import annotations

import json
import os
import re
import tempfile

_SCALAR_LIST = re.compile(r"\[\s+([^\[\]{}\"]*|(?:\"[^\"\\,]*\",?\s*)+)\s*\]")


def json_text(obj) -> str:
    """``json.dumps(obj, indent=2)`` with lists of numbers or short strings on one line."""
    text = json.dumps(obj, indent=2, ensure_ascii=False)
    compact = _SCALAR_LIST.sub(
        lambda m: "[" + " ".join(m.group(1).split()) + "]", text)
    return compact if json.loads(compact) == json.loads(text) else text


def _umask_mode() -> int:
    """The mode ``open()`` would give a new file (mkstemp's temporaries are 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _temporary(path: str, suffix: str = "") -> str:
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"no such folder for {path}: {directory}")
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".npconv-", suffix=suffix)
    os.close(fd)
    return tmp


def write_text(path: str, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    tmp = _temporary(path)
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def save_figure(fig, path: str, dpi: int = 110) -> None:
    """Save a matplotlib figure to ``path`` atomically (format from the extension)."""
    suffix = os.path.splitext(path)[1] or ".png"
    tmp = _temporary(path, suffix)
    try:
        fig.savefig(tmp, dpi=dpi)
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
