"""A strict reader for the IDX format of MNIST and Fashion-MNIST (gzipped or not).

The format (big-endian)::

    bytes 0-1   0x00 0x00
    byte  2     element type: 0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
                0x0D float32, 0x0E float64
    byte  3     number of dimensions D (>= 1)
    4 * D       the dimensions, uint32 each
    the rest    prod(dims) elements, row-major

A file is refused (``ValueError`` naming the file and the problem) when its magic
bytes are wrong, its type code is unknown, it is shorter than its header says
(truncated) or longer (trailing bytes), or its gzip stream is corrupt.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib

import numpy as np

IDX_TYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
GZIP_MAGIC = b"\x1f\x8b"


def _read_bytes(path: str) -> bytes:
    """The file's bytes, gunzipped when it starts with the gzip magic."""
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] != GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise ValueError(f"IDX file {path!r}: corrupt or truncated gzip data ({exc})") from exc


def parse_idx(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Decode the bytes of an IDX file (see the module docstring).

    Returns
    -------
    ndarray of the header's shape, in native byte order (uint8 for MNIST)
    """
    if len(data) < 4:
        raise ValueError(f"IDX file {name!r}: {len(data)} bytes, too short for the 4-byte "
                         f"header (truncated or empty)")
    if data[0] != 0 or data[1] != 0:
        raise ValueError(f"IDX file {name!r}: bad magic number {data[:4].hex()} (the first "
                         f"two bytes must be zero): not an IDX file")
    code, ndim = data[2], data[3]
    if code not in IDX_TYPES:
        raise ValueError(f"IDX file {name!r}: unknown element type code 0x{code:02X} "
                         f"(expected one of {', '.join(f'0x{c:02X}' for c in IDX_TYPES)})")
    if ndim == 0:
        raise ValueError(f"IDX file {name!r}: header declares 0 dimensions")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"IDX file {name!r}: truncated header ({len(data)} bytes, the "
                         f"{ndim} dimensions need {header})")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = IDX_TYPES[code]
    expected = header + math.prod(shape) * dtype.itemsize
    if len(data) != expected:
        problem = "truncated" if len(data) < expected else "has trailing bytes"
        raise ValueError(f"IDX file {name!r}: {problem}: header says shape {shape} of "
                         f"{dtype.name} ({expected} bytes in all), file has {len(data)} bytes")
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="), copy=True)  # native order, writeable


def read_idx(path) -> np.ndarray:
    """Read an IDX file, gzipped (detected by its magic bytes) or not.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is malformed (the message names the file and the problem).
    """
    path = os.fspath(path)
    return parse_idx(_read_bytes(path), path)


def write_idx(path, array: np.ndarray, compress: bool | None = None) -> None:
    """Write ``array`` as an IDX file (gzipped when ``compress`` or the name ends in .gz)."""
    path = os.fspath(path)
    array = np.asarray(array)
    codes = {dtype.newbyteorder("="): code for code, dtype in IDX_TYPES.items()}
    native = array.dtype.newbyteorder("=")
    if native not in codes or array.ndim == 0 or array.ndim > 255:
        raise ValueError(f"write_idx: cannot store dtype {array.dtype} with {array.ndim} "
                         f"dimensions in IDX")
    code = codes[native]
    payload = (bytes([0, 0, code, array.ndim])
               + np.asarray(array.shape, dtype=">u4").tobytes()
               + np.ascontiguousarray(array, dtype=IDX_TYPES[code]).tobytes())
    if compress or (compress is None and path.endswith(".gz")):
        payload = gzip.compress(payload, mtime=0)
    with open(path, "wb") as f:
        f.write(payload)
