"""Command-line value parsers shared by ``explain``, ``fit-kernel`` and ``check``.

Each parser turns one option string into the value the functional API accepts and
raises :class:`argparse.ArgumentTypeError` (shown by argparse as a one-line usage
error) when it cannot.
"""

from __future__ import annotations

import argparse
import re

_SEPARATORS = re.compile(r"[,x×\s]+")


def _ints(text: str, what: str) -> tuple[int, ...]:
    parts = [p for p in _SEPARATORS.split(text.strip().strip("()[]")) if p]
    try:
        return tuple(int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{what} must be integers separated by commas, got {text!r}") from None


def shape4(text: str) -> tuple[int, int, int, int]:
    """``"8,3,7,6"`` (or ``8x3x7x6``) -> ``(8, 3, 7, 6)``."""
    values = _ints(text, "a shape")
    if len(values) != 4 or min(values) < 1:
        raise argparse.ArgumentTypeError(
            f"a shape needs 4 positive integers like 8,3,7,6, got {text!r}")
    return values


def pair(text: str) -> int | tuple[int, int]:
    """``"2"`` -> ``2``; ``"2,1"`` -> ``(2, 1)`` (for stride and dilation)."""
    values = _ints(text, "stride/dilation")
    if len(values) not in (1, 2):
        raise argparse.ArgumentTypeError(f"expected one integer or two (h,w), got {text!r}")
    return values[0] if len(values) == 1 else values


def padding(text: str):
    """``same``/``valid``, ``p``, ``ph,pw`` or ``top,bottom,left,right``."""
    if text.strip().lower() in ("same", "valid"):
        return text.strip().lower()
    values = _ints(text, "padding")
    if len(values) == 1:
        return values[0]
    if len(values) == 2:
        return values
    if len(values) == 4:
        return (values[0], values[1], values[2], values[3])
    raise argparse.ArgumentTypeError(
        f"padding must be same, valid, p, ph,pw or top,bottom,left,right; got {text!r}")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def add_layer_options(parser: argparse.ArgumentParser, x_default=None,
                      weight_default=None) -> None:
    """``--x --weight --stride --padding --dilation --groups --padding-mode``."""
    from ..spec import PADDING_MODES

    parser.add_argument("--x", type=shape4, default=x_default, metavar="N,C,H,W",
                        help="input shape" + (f" (default {','.join(map(str, x_default))})"
                                              if x_default else ""))
    parser.add_argument("--weight", type=shape4, default=weight_default,
                        metavar="CO,CI/G,KH,KW",
                        help="weight shape" + (f" (default {','.join(map(str, weight_default))})"
                                               if weight_default else ""))
    parser.add_argument("--stride", type=pair, default=1, metavar="S|SH,SW")
    parser.add_argument("--padding", type=padding, default=0,
                        metavar="P|PH,PW|T,B,L,R|same|valid")
    parser.add_argument("--dilation", type=pair, default=1, metavar="D|DH,DW")
    parser.add_argument("--groups", type=positive_int, default=1)
    parser.add_argument("--padding-mode", choices=PADDING_MODES, default="zeros")
