"""Argument normalisation, validation and the size formulas of the book.

Everything a convolution needs to know about its geometry is resolved here, once,
before any algorithm runs. Algorithms receive a :class:`ConvSpec` and arrays that
have already been checked, so a Numba kernel never sees an index it cannot use.

Notation (used throughout npconv)::

    x        input            (N, C_in, H, W)
    weight   kernels          (C_out, C_in / groups, KH, KW)
    y        output           (N, C_out, OH, OW)
    S, P, D  stride, padding, dilation (per axis)

    OH = (H + P_top + P_bottom - D_h * (KH - 1) - 1) // S_h + 1        (formula 14.3.1,
    OW = (W + P_left + P_right - D_w * (KW - 1) - 1) // S_w + 1         with dilation)
"""

from __future__ import annotations

import functools
import numbers
from dataclasses import dataclass, fields

import numpy as np

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

Pair = tuple[int, int]
Pad4 = tuple[int, int, int, int]


# --------------------------------------------------------------------------- formulas
def output_size(size: int, kernel_size: int, stride: int = 1, padding: int | Pair = 0,
                dilation: int = 1) -> int:
    """Output length along one axis (the book's formula 14.3.1, with dilation).

    ``out = (size + p_before + p_after - dilation * (kernel_size - 1) - 1) // stride + 1``

    Parameters
    ----------
    size : int
        Input length (H or W).
    kernel_size : int
        Kernel length (KH or KW).
    stride, dilation : int
        Step between output positions and between kernel taps.
    padding : int or (int, int)
        Zeros added on both sides, or ``(before, after)``.

    Returns
    -------
    int
        The output length; it may be < 1, which callers reject.
    """
    before, after = (padding, padding) if isinstance(padding, numbers.Integral) else padding
    return (size + before + after - dilation * (kernel_size - 1) - 1) // stride + 1


def backward_padding(input_size: int, output_size: int, kernel_size: int, stride: int = 1,
                     dilation: int = 1) -> Pair:
    """Padding that turns the input-gradient into a stride-1 forward convolution.

    The book's formula 14.5.1 (read with "output" = the gradient we want, dX, and
    "input" = dZ)::

        P = ((H_output - 1) * Stride - H_input + H_kernel) / 2

    is exact only for stride 1 and no dilation. In general dZ is first dilated with
    ``stride - 1`` zeros between entries (17.3.2 zero insertion), which makes it
    ``(out - 1) * stride + 1`` long; a full correlation with the effective kernel
    ``ke = dilation * (k - 1) + 1`` then needs ``ke - 1`` zeros before it and
    ``ke - 1 + r`` after it, where ``r = (input_size - ke) % stride`` are the input
    rows the forward pass never reached (the stride remainder). The total is
    ``2 * (ke - 1) + r``; when ``r`` is odd the book's floor division splits it
    wrongly, and when ``r > 0`` the split must be asymmetric.

    Parameters
    ----------
    input_size : int
        Length of the (zero-padded) forward input, i.e. of the gradient wanted.
    output_size : int
        Length of the forward output (of dZ).
    kernel_size, stride, dilation : int
        The forward convolution's parameters along this axis.

    Returns
    -------
    (int, int)
        Zeros to add before and after the zero-inserted dZ.
    """
    ke = dilation * (kernel_size - 1) + 1
    remainder = input_size - ((output_size - 1) * stride + ke)
    if remainder < 0 or remainder >= stride:
        raise ValueError(
            f"backward_padding: output size {output_size} is not the output of input size "
            f"{input_size} with kernel {kernel_size}, stride {stride}, dilation {dilation}")
    return ke - 1, ke - 1 + remainder


def same_padding(size: int, kernel_size: int, stride: int = 1, dilation: int = 1) -> Pair:
    """``(before, after)`` zeros for ``padding="same"``.

    With stride 1 this is PyTorch's rule: ``total = dilation * (kernel_size - 1)``,
    ``before = total // 2`` and the odd one goes after (bottom/right). With stride > 1
    (which PyTorch refuses) npconv uses the TensorFlow/JAX meaning: the output has
    ``ceil(size / stride)`` positions and ``total = max((out - 1) * stride + ke - size, 0)``
    is split the same way.
    """
    ke = dilation * (kernel_size - 1) + 1
    out = -(-size // stride)
    total = max((out - 1) * stride + ke - size, 0)
    return total // 2, total - total // 2


# --------------------------------------------------------------------------- the spec
@dataclass(frozen=True)
class ConvSpec:
    """The resolved geometry of one 2-D convolution, as the algorithms see it.

    ``h, w`` are the spatial sizes of the array the algorithm receives (for the
    ``reflect``/``replicate``/``circular`` modes that array is already padded, and
    ``padding`` is then all zeros). ``padding`` holds the zeros the algorithm itself
    must add, as ``(top, bottom, left, right)``.
    """

    n: int
    c_in: int
    h: int
    w: int
    c_out: int
    kh: int
    kw: int
    stride: Pair = (1, 1)
    padding: Pad4 = (0, 0, 0, 0)
    dilation: Pair = (1, 1)
    groups: int = 1

    def __hash__(self) -> int:
        # computed once: specs key the algorithms' caches (index tables), call after call
        h = self.__dict__.get("_hash")
        if h is None:
            h = hash(tuple(getattr(self, f.name) for f in fields(self)))
            object.__setattr__(self, "_hash", h)
        return h

    @functools.cached_property
    def c_in_g(self) -> int:
        """Input channels per group."""
        return self.c_in // self.groups

    @functools.cached_property
    def c_out_g(self) -> int:
        """Output channels per group."""
        return self.c_out // self.groups

    @functools.cached_property
    def hp(self) -> int:
        """Zero-padded input height."""
        return self.h + self.padding[0] + self.padding[1]

    @functools.cached_property
    def wp(self) -> int:
        """Zero-padded input width."""
        return self.w + self.padding[2] + self.padding[3]

    @functools.cached_property
    def oh(self) -> int:
        return (self.hp - self.dilation[0] * (self.kh - 1) - 1) // self.stride[0] + 1

    @functools.cached_property
    def ow(self) -> int:
        return (self.wp - self.dilation[1] * (self.kw - 1) - 1) // self.stride[1] + 1

    @functools.cached_property
    def x_shape(self) -> tuple[int, int, int, int]:
        return (self.n, self.c_in, self.h, self.w)

    @functools.cached_property
    def weight_shape(self) -> tuple[int, int, int, int]:
        return (self.c_out, self.c_in_g, self.kh, self.kw)

    @functools.cached_property
    def y_shape(self) -> tuple[int, int, int, int]:
        return (self.n, self.c_out, self.oh, self.ow)

    @functools.cached_property
    def flops(self) -> int:
        """Multiply-adds times two of the forward pass (each gradient costs the same)."""
        return 2 * self.n * self.c_out * self.oh * self.ow * self.c_in_g * self.kh * self.kw


@dataclass(frozen=True)
class Conv2dPlan:
    """A validated call: the algorithm's spec plus what the padding mode must do.

    Attributes
    ----------
    spec : ConvSpec
        What the algorithm computes (zero padding only).
    mode : str
        ``padding_mode``; for anything but ``"zeros"`` the input is padded by
        :mod:`npconv.padding` first and ``spec.padding`` is ``(0, 0, 0, 0)``.
    mode_padding : (int, int, int, int)
        ``(top, bottom, left, right)`` for the mode padding (zeros for ``"zeros"``).
    input_hw : (int, int)
        Spatial size of the user's input, before any mode padding.
    batched : bool
        False when the user passed an unbatched ``(C, H, W)`` array.
    """

    spec: ConvSpec
    mode: str
    mode_padding: Pad4
    input_hw: Pair
    batched: bool


# --------------------------------------------------------------------------- parameters
def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral | np.integer) and not isinstance(v, bool | np.bool_)


def int_pair(value, name: str, who: str = "conv2d") -> Pair:
    """``1 -> (1, 1)``, ``(1, 2) -> (1, 2)``; anything else is a ``TypeError``."""
    if _is_int(value):
        return int(value), int(value)
    if isinstance(value, tuple | list) and len(value) == 2 and all(_is_int(v) for v in value):
        return int(value[0]), int(value[1])
    raise TypeError(f"{who}: {name} must be an int or a tuple of 2 ints, got {value!r}")


def positive_pair(value, name: str, who: str = "conv2d") -> Pair:
    pair = int_pair(value, name, who)
    if min(pair) < 1:
        word = "stride" if name == "stride" else name
        raise ValueError(f"{who}: non-positive {word} is not supported, got {name}={value!r}")
    return pair


def explicit_padding(padding, who: str = "conv2d") -> Pad4:
    """Normalise a numeric padding to ``(top, bottom, left, right)``.

    Accepts ``p``, ``(ph, pw)``, ``((top, bottom), (left, right))`` and
    ``(top, bottom, left, right)``.
    """
    if _is_int(padding):
        p = int(padding)
        pads = (p, p, p, p)
    elif isinstance(padding, tuple | list) and len(padding) == 2 and all(map(_is_int, padding)):
        pads = (int(padding[0]), int(padding[0]), int(padding[1]), int(padding[1]))
    elif (isinstance(padding, tuple | list) and len(padding) == 2
          and all(isinstance(p, tuple | list) and len(p) == 2 and all(map(_is_int, p))
                  for p in padding)):
        (t, b), (left, r) = padding
        pads = (int(t), int(b), int(left), int(r))
    elif isinstance(padding, tuple | list) and len(padding) == 4 and all(map(_is_int, padding)):
        pads = tuple(int(p) for p in padding)
    else:
        raise TypeError(
            f"{who}: padding must be an int, a pair of ints, ((top, bottom), (left, right)), "
            f"'valid' or 'same', got {padding!r}")
    if min(pads) < 0:
        raise ValueError(f"{who}: negative padding is not supported, got padding={padding!r}")
    return pads


def resolve_padding(padding, hw: Pair, kernel: Pair, stride: Pair, dilation: Pair,
                    who: str = "conv2d") -> Pad4:
    """Turn any accepted ``padding`` value into ``(top, bottom, left, right)``."""
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0, 0, 0)
        if padding == "same":
            top, bottom = same_padding(hw[0], kernel[0], stride[0], dilation[0])
            left, right = same_padding(hw[1], kernel[1], stride[1], dilation[1])
            return (top, bottom, left, right)
        raise ValueError(
            f"{who}: Invalid padding string {padding!r}, should be one of {{'valid', 'same'}}")
    return explicit_padding(padding, who)


def check_mode(padding_mode, who: str = "conv2d") -> str:
    if not isinstance(padding_mode, str) or padding_mode not in PADDING_MODES:
        raise ValueError(f"{who}: padding_mode must be one of {PADDING_MODES}, "
                         f"got {padding_mode!r}")
    return padding_mode


def check_groups(groups, who: str = "conv2d") -> int:
    if not _is_int(groups):
        raise TypeError(f"{who}: groups must be an int, got {groups!r}")
    if groups < 1:
        raise ValueError(f"{who}: non-positive groups is not supported, got groups={groups}")
    return int(groups)


# --------------------------------------------------------------------------- arrays
def as_float_array(a, name: str, who: str = "conv2d") -> np.ndarray:
    """Check that ``a`` is a float32/float64 array (array-likes are converted)."""
    if not isinstance(a, np.ndarray):
        if a is None or isinstance(a, str | bytes):
            raise TypeError(f"{who}: {name} must be an array, got {type(a).__name__}")
        a = np.asarray(a)
        if a.dtype.kind in "iub":  # a Python list of ints: treat as float64, as np.array does
            a = a.astype(np.float64)
    if a.dtype not in FLOAT_DTYPES:
        kind = {"i": "integer", "u": "unsigned integer", "b": "boolean", "c": "complex",
                "f": "floating-point", "O": "object"}.get(a.dtype.kind, "unsupported")
        raise TypeError(f"{who}: {name} must be float32 or float64, got {kind} dtype "
                        f"{a.dtype} (convert with .astype(np.float32))")
    return a


def check_same_dtype(who: str, **arrays) -> np.dtype:
    items = [(k, v) for k, v in arrays.items() if v is not None]
    dtype = items[0][1].dtype
    for name, a in items[1:]:
        if a.dtype != dtype:
            raise TypeError(f"{who}: {items[0][0]} type ({dtype}) and {name} type ({a.dtype}) "
                            f"should be the same")
    return dtype


def _shape_str(shape) -> str:
    return "[" + ", ".join(str(s) for s in shape) + "]"


def plan_conv2d(x_shape, weight_shape, stride=1, padding=0, dilation=1, groups=1,
                padding_mode="zeros", who: str = "conv2d") -> Conv2dPlan:
    """Validate a conv2d call's shapes and parameters and resolve its geometry.

    Plans are immutable, so the plans of recent calls are remembered: a training loop
    that calls a layer with the same shapes again skips the validation (about 20 us of
    the book's 14.5.3 iteration). The key is the arguments themselves when stride,
    padding, dilation and groups are plain ints, else their ``repr``, so ``True`` and
    ``1`` (or ``1.0``) never share a plan.

    Parameters
    ----------
    x_shape : tuple
        ``(N, C_in, H, W)`` or unbatched ``(C_in, H, W)``.
    weight_shape : tuple
        ``(C_out, C_in / groups, KH, KW)``.

    Returns
    -------
    Conv2dPlan

    Raises
    ------
    ValueError, TypeError
        With a message naming the shapes involved.
    """
    args = (x_shape, weight_shape, stride, padding, dilation, groups, padding_mode, who)
    if (type(stride) is int and type(padding) is int and type(dilation) is int
            and type(groups) is int and type(padding_mode) is str
            and type(x_shape) is tuple and type(weight_shape) is tuple):
        key = args  # plain ints (no bool among them): the tuple itself is exact, and faster
    else:
        key = repr(args)
    plan = _PLANS.get(key)
    if plan is None:
        plan = _plan_conv2d(*args)
        if len(_PLANS) >= 512:
            _PLANS.clear()
        _PLANS[key] = plan
    return plan


_PLANS: dict[str | tuple, Conv2dPlan] = {}


def _plan_conv2d(x_shape, weight_shape, stride, padding, dilation, groups, padding_mode,
                 who) -> Conv2dPlan:
    x_shape, weight_shape = tuple(x_shape), tuple(weight_shape)
    if len(x_shape) not in (3, 4):
        raise ValueError(f"{who}: Expected 3D (unbatched) or 4D (batched) input to {who}, "
                         f"but got input of size: {_shape_str(x_shape)}")
    if len(weight_shape) != 4:
        raise ValueError(f"{who}: Expected 4D weight (C_out, C_in/groups, KH, KW), but got "
                         f"weight of size: {_shape_str(weight_shape)}")
    batched = len(x_shape) == 4
    n, c_in, h, w = x_shape if batched else (1, *x_shape)
    c_out, c_in_g, kh, kw = weight_shape
    stride = positive_pair(stride, "stride", who)
    dilation = positive_pair(dilation, "dilation", who)
    groups = check_groups(groups, who)
    mode = check_mode(padding_mode, who)
    if n < 0 or min((c_in, h, w, *weight_shape)) < 1:
        raise ValueError(f"{who}: input {_shape_str(x_shape)} and weight "
                         f"{_shape_str(weight_shape)} must not have empty dimensions "
                         f"(but for the batch: N = 0 is allowed)")
    if c_out % groups:
        raise ValueError(f"{who}: out_channels must be divisible by groups, got weight of size "
                         f"{_shape_str(weight_shape)} and groups={groups}")
    if c_in_g * groups != c_in:
        raise ValueError(
            f"{who}: Given groups={groups}, weight of size {_shape_str(weight_shape)}, expected "
            f"input{_shape_str(x_shape)} to have {c_in_g * groups} channels, but got {c_in} "
            f"channels instead")
    pads = resolve_padding(padding, (h, w), (kh, kw), stride, dilation, who)
    hp, wp = h + pads[0] + pads[1], w + pads[2] + pads[3]
    keh, kew = dilation[0] * (kh - 1) + 1, dilation[1] * (kw - 1) + 1
    if keh > hp or kew > wp:
        raise ValueError(
            f"{who}: Calculated padded input size per channel: ({hp} x {wp}). Kernel size: "
            f"({keh} x {kew}). Kernel size can't be greater than actual input size "
            f"(input {_shape_str(x_shape)}, weight {_shape_str(weight_shape)})")
    if mode != "zeros":
        _check_mode_padding(mode, pads, (h, w), x_shape, who)
        spec = ConvSpec(n, c_in, hp, wp, c_out, kh, kw, stride, (0, 0, 0, 0), dilation, groups)
        return Conv2dPlan(spec, mode, pads, (h, w), batched)
    spec = ConvSpec(n, c_in, h, w, c_out, kh, kw, stride, pads, dilation, groups)
    return Conv2dPlan(spec, mode, (0, 0, 0, 0), (h, w), batched)


def plan_conv_transpose2d(x_shape, weight_shape, stride=1, padding=0, output_padding=0, groups=1,
                          dilation=1, who: str = "conv_transpose2d") -> Conv2dPlan:
    """Validate a conv_transpose2d call; it is conv2d's input gradient, so plan that conv2d.

    Parameters
    ----------
    x_shape : tuple
        ``(N, C_in, H, W)`` or unbatched ``(C_in, H, W)``.
    weight_shape : tuple
        ``(C_in, C_out / groups, KH, KW)``.

    Returns
    -------
    Conv2dPlan
        The conv2d plan whose *input* is the transposed convolution's output
        ``(N, C_out, H_out, W_out)`` and whose *output* is x (x is zero-padded to the
        plan's OH x OW when output_padding >= stride).
    """
    x_shape, weight_shape = tuple(x_shape), tuple(weight_shape)
    if len(x_shape) not in (3, 4):
        raise ValueError(f"{who}: Expected 3D (unbatched) or 4D (batched) input to {who}, "
                         f"but got input of size: {_shape_str(x_shape)}")
    if len(weight_shape) != 4:
        raise ValueError(f"{who}: Expected 4D weight (C_in, C_out/groups, KH, KW), but got "
                         f"weight of size: {_shape_str(weight_shape)}")
    batched = len(x_shape) == 4
    n, c_in, h, w = x_shape if batched else (1, *x_shape)
    groups = check_groups(groups, who)
    stride = positive_pair(stride, "stride", who)
    dilation = positive_pair(dilation, "dilation", who)
    if isinstance(padding, str):
        raise ValueError(f"{who}: padding must be numeric for a transposed convolution, "
                         f"got {padding!r}")
    pads = explicit_padding(padding, who)
    out_pad = int_pair(output_padding, "output_padding", who)
    if min(out_pad) < 0:
        raise ValueError(f"{who}: negative output_padding is not supported, got {output_padding}")
    for axis, name in ((0, "height"), (1, "width")):
        if out_pad[axis] >= max(stride[axis], dilation[axis]):
            raise ValueError(
                f"{who}: output padding must be smaller than either stride or dilation, but got "
                f"output_padding_{name}: {out_pad[axis]} stride_{name}: {stride[axis]} "
                f"dilation_{name}: {dilation[axis]}")
    if weight_shape[0] != c_in:
        raise ValueError(f"{who}: Given transposed=1, weight of size {_shape_str(weight_shape)}, "
                         f"expected input{_shape_str(x_shape)} to have {weight_shape[0]} channels, "
                         f"but got {c_in} channels instead")
    if c_in % groups:
        raise ValueError(f"{who}: in_channels must be divisible by groups, got input "
                         f"{_shape_str(x_shape)} and groups={groups}")
    kh, kw = weight_shape[2:]
    out_h = (h - 1) * stride[0] - pads[0] - pads[1] + dilation[0] * (kh - 1) + out_pad[0] + 1
    out_w = (w - 1) * stride[1] - pads[2] - pads[3] + dilation[1] * (kw - 1) + out_pad[1] + 1
    if out_h < 1 or out_w < 1:
        raise ValueError(f"{who}: Given input size per channel: ({h} x {w}) and weight "
                         f"{_shape_str(weight_shape)}, the calculated output size "
                         f"({out_h} x {out_w}) is too small")
    conv_input = (n, weight_shape[1] * groups, out_h, out_w)
    plan = plan_conv2d(conv_input, weight_shape, stride, pads, dilation, groups, "zeros", who)
    return Conv2dPlan(plan.spec, "zeros", (0, 0, 0, 0), (out_h, out_w), batched)


def _check_mode_padding(mode: str, pads: Pad4, hw: Pair, x_shape, who: str) -> None:
    """Reflection needs ``pad < size``; circular needs ``pad <= size`` (as in PyTorch)."""
    for axis, (before, after), size in ((-2, pads[:2], hw[0]), (-1, pads[2:], hw[1])):
        if mode == "reflect" and max(before, after) >= size:
            raise ValueError(
                f"{who}: Padding size should be less than the corresponding input dimension for "
                f"padding_mode='reflect', but got: padding ({before}, {after}) at dimension "
                f"{axis % len(x_shape)} of input {_shape_str(x_shape)}")
        if mode == "circular" and max(before, after) > size:
            raise ValueError(
                f"{who}: Padding value causes wrapping around more than once for "
                f"padding_mode='circular': padding ({before}, {after}) at dimension "
                f"{axis % len(x_shape)} of input {_shape_str(x_shape)}")


def check_grad_output(grad_output: np.ndarray, plan: Conv2dPlan, who: str) -> None:
    """``grad_output`` must have exactly the forward output's shape."""
    s = plan.spec
    expected = s.y_shape if plan.batched else s.y_shape[1:]
    if tuple(grad_output.shape) != expected:
        raise ValueError(
            f"{who}: grad_output of size {_shape_str(grad_output.shape)} does not match the "
            f"output size {_shape_str(expected)} of a convolution of input "
            f"{_shape_str(((s.n,) if plan.batched else ()) + (s.c_in, *plan.input_hw))} with "
            f"weight {_shape_str(s.weight_shape)}")


def size_tuple(size, name: str, who: str) -> tuple[int, ...]:
    """A shape argument (``input_size`` / ``weight_size``) as a tuple of ints."""
    try:
        out = tuple(size)
    except TypeError:
        raise TypeError(f"{who}: {name} must be a tuple of ints, got {size!r}") from None
    if not all(_is_int(v) for v in out):
        raise TypeError(f"{who}: {name} must be a tuple of ints, got {size!r}")
    return tuple(int(v) for v in out)
