"""Compiling one loop body twice: serial for small problems, parallel for large ones.

Numba keys its on-disk cache by the function's qualified name and its bytecode, not
by the compile options: ``njit(cache=True)(f)`` and ``njit(parallel=True,
cache=True)(f)`` share one cache entry, and in a later process both load whichever
was saved last (the parallel kernel then runs serially, or the serial one wakes the
thread pool). :func:`serial_and_parallel` gives each variant its own function object
and qualified name, so each has its own cache entry.
"""

from __future__ import annotations

import os
import platform
import types

from numba import njit


def _kernel_features() -> str | None:
    """Numba's CPU feature string for npconv's kernels, set before anything compiles; None
    where npconv leaves Numba's own choice (the user set NUMBA_CPU_FEATURES or
    NUMBA_CPU_NAME, the CPU is not x86, there is no flag to add, or Numba compiled
    something before npconv was imported and has fixed its features).

    Two tuning flags are added to the host's features; neither changes a result:

    * ``+prefer-no-gather``: LLVM's SLP vectoriser, asked to broadcast the eight input
      values of a register tile (:mod:`.algorithms._implicit`), loaded them with one
      gather instruction and split it with seven shuffles on the port the second FMA
      unit uses, where eight broadcast loads cost nothing on that port. Measured on an
      AVX-512 Xeon, implicit forward, ms, with gathers against without: the stride-2
      ResNet layer 17.4 / 14.2, the dilated suite layer 3.3 / 1.9, LeNet's second layer
      0.29 / 0.17. (LLVM knows the flag from version 17.)
    * ``-prefer-256-bit`` where the CPU has AVX-512: some CPU models (Skylake-X, Ice
      Lake) tell LLVM to vectorise with 256-bit registers only; the register tiles are
      sized for the host's full vector width (:data:`VECTOR_BYTES`).

    Numba's cache keys compiled code by these features, so kernels compiled with and
    without them never mix.
    """
    from llvmlite import binding
    from numba.core import codegen, config

    if (config.CPU_FEATURES is not None or config.CPU_NAME is not None
            or "NUMBA_CPU_FEATURES" in os.environ or "NUMBA_CPU_NAME" in os.environ
            or platform.machine().lower() not in ("x86_64", "amd64")
            or _compiled_features() is not None):  # too late: Numba has compiled
        return None
    features = codegen.get_host_cpu_features()
    flags = ["+prefer-no-gather"] if binding.llvm_version_info >= (17,) else []
    if "+avx512f" in features.split(","):
        flags.append("-prefer-256-bit")
    if not features or not flags:
        return None
    tuned = ",".join([features, *flags])
    config.CPU_FEATURES = tuned  # read when Numba first compiles (its CPU codegen)
    return tuned


def _compiled_features() -> str | None:
    """The features Numba compiles with, once it has compiled anything (its CPU codegen
    then exists and keeps them), else None."""
    from numba.core import registry

    target = registry.cpu_target
    if "_toplevel_target_context" not in vars(target):  # a lazily created property
        return None
    return getattr(target.target_context.codegen(), "_tm_features", None)


def _vector_bytes(features: str | None) -> int:
    from numba.core import codegen, config

    if features is None:
        features = (_compiled_features() or config.CPU_FEATURES
                    or codegen.get_host_cpu_features())
    flags = features.split(",")
    return 64 if "+avx512f" in flags and "+prefer-256-bit" not in flags else 32


KERNEL_FEATURES = _kernel_features()
# The width of the vector registers the kernels are compiled for: 64 bytes with AVX-512
# (16 float32), else 32 (AVX2). The register tiles of :mod:`.algorithms._implicit` and
# :mod:`.algorithms._blocked` are sized by it.
VECTOR_BYTES = _vector_bytes(KERNEL_FEATURES)


def _variant(fn, suffix: str):
    clone = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__, fn.__defaults__,
                               fn.__closure__)
    clone.__qualname__ = f"{fn.__qualname__}_{suffix}"
    clone.__doc__ = fn.__doc__
    return clone


def serial_and_parallel(fn, **options):
    """``(serial, parallel)`` dispatchers of ``fn`` (its loops written with ``prange``),
    both cached on disk, each under its own name; ``options`` go to both ``njit``."""
    return (njit(cache=True, **options)(_variant(fn, "serial")),
            njit(parallel=True, cache=True, **options)(_variant(fn, "parallel")))


def generated(source: str, name: str, namespace: dict):
    """The function ``name`` defined by ``source`` in a module's ``namespace`` (its
    ``globals()``) and under the module's file name, so that Numba caches the compiled
    kernel beside the module and can rebuild its globals when loading it."""
    exec(compile(source, namespace["__file__"], "exec"), namespace)
    return namespace.pop(name)


# defined after KERNEL_FEATURES: nothing above may have Numba compile first
from llvmlite import ir  # noqa: E402
from numba.core import cgutils  # noqa: E402
from numba.core import types as nbtypes  # noqa: E402
from numba.extending import intrinsic  # noqa: E402


@intrinsic
def prefetch(typingctx, array, index):
    """``prefetch(array, index)``, in compiled code: ask the CPU to bring the cache line
    holding ``array[index]`` (a C-contiguous array, an in-bounds flat index) into the
    L1 cache ahead of its use (LLVM's ``llvm.prefetch``: a read, kept close; on x86
    ``prefetcht0``). It never faults and changes no result. The kernels that walk
    inputs in an order the CPU's own prefetchers do not follow use it
    (:mod:`.algorithms._implicit`)."""
    if not (isinstance(array, nbtypes.Array) and array.layout == "C"
            and isinstance(index, nbtypes.Integer)):
        return None

    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        address = builder.bitcast(builder.gep(data, [args[1]]), ir.IntType(8).as_pointer())
        i32 = ir.IntType(32)
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [address.type, i32, i32, i32]),
            "llvm.prefetch.p0")
        builder.call(fn, [address, i32(0), i32(3), i32(1)])  # read, high locality, data
        return context.get_dummy_value()

    return nbtypes.void(array, index), codegen


def _pow2(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


@intrinsic
def store_transposed(typingctx, out, start, pitch, bias, row, tile):
    """``store_transposed(out, start, pitch, bias, row, tile)``, in compiled code: a
    register tile of sums, ``tile[p][c]`` for PX pixels p and CO channels c (a tuple of
    PX tuples of CO values), stored plane by plane with the bias added::

        out[start + c * pitch + p] = tile[p][c] + bias[row + c]

    ``out`` and ``bias`` are C-contiguous 1-D arrays of one dtype, every index in bounds.
    With ``bias`` None the values are stored as they are (a transposing copy: nothing is
    added, so even a zero's sign is kept).

    Written as plain Python, LLVM's SLP vectoriser stored such a tile (its vector
    registers hold consecutive channels of one pixel, each row of ``out`` wants
    consecutive pixels of one channel) with a transpose of its own: 264 shuffle
    instructions, many through the stack, for a 32 x 8 tile with AVX-512. Here it is the
    transpose of log2(PX) rounds of two-register shuffles, each round swapping one bit
    of the pixel index (which register) with one bit of the channel index (which lane),
    and one vector store per row: for that tile 48 shuffles, which LLVM emits as about
    80 instructions, and 32 stores. The forward kernels that store such tiles ran 1-8%
    faster (:mod:`.algorithms._implicit`). Each value is the same single addition
    as in the plain store, so results are bit for bit the same. Tiles whose PX is not a
    power of two no greater than a vector register's lanes (:data:`VECTOR_BYTES`), or
    whose CO is not a whole number of registers, are stored value by value.
    """
    biased = not isinstance(bias, (nbtypes.NoneType, nbtypes.Omitted))
    if not (isinstance(out, nbtypes.Array) and out.ndim == 1 and out.layout == "C"
            and (not biased or (isinstance(bias, nbtypes.Array) and bias.ndim == 1
                                and bias.layout == "C" and bias.dtype == out.dtype))
            and isinstance(tile, nbtypes.UniTuple) and isinstance(tile.dtype, nbtypes.UniTuple)
            and out.dtype == tile.dtype.dtype and isinstance(out.dtype, nbtypes.Float)
            and all(isinstance(a, nbtypes.Integer) for a in (start, pitch, row))):
        return None
    px, co = tile.count, tile.dtype.count
    lanes = min(co, VECTOR_BYTES * 8 // out.dtype.bitwidth)

    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        bias_data = (context.make_array(signature.args[3])(context, builder, args[3]).data
                     if biased else None)
        i32, i64 = ir.IntType(32), ir.IntType(64)
        start, pitch, row = (context.cast(builder, args[i], signature.args[i], nbtypes.int64)
                             for i in (1, 2, 4))
        values = args[5]

        def at(c: int, p: int):  # flat index in out of channel c, pixel p
            return builder.add(start, builder.add(builder.mul(pitch, i64(c)), i64(p)))

        if not (_pow2(px) and _pow2(lanes) and px <= lanes and co % lanes == 0):
            for c in range(co):
                if biased:
                    b = builder.load(builder.gep(bias_data, [builder.add(row, i64(c))]))
                for p in range(px):
                    value = builder.extract_value(values, [p, c])
                    if biased:
                        value = builder.fadd(value, b)
                    builder.store(value, builder.gep(data, [at(c, p)]))
            return context.get_dummy_value()

        item, align = data.type.pointee, out.dtype.bitwidth // 8
        vector, row_type = ir.VectorType(item, lanes), ir.VectorType(item, px)

        def shuffle(a, b, mask):
            return builder.shuffle_vector(a, b, ir.Constant(ir.VectorType(i32, len(mask)),
                                                            mask))

        for h in range(co // lanes):  # one register's worth of channels at a time
            if biased:
                where = builder.gep(bias_data, [builder.add(row, i64(h * lanes))])
                b = builder.load(builder.bitcast(where, vector.as_pointer()), align=align)
            regs = []  # regs[p][l]: channel h*lanes + l of pixel p
            for p in range(px):
                reg = ir.Constant(vector, ir.Undefined)
                for lane in range(lanes):
                    reg = builder.insert_element(
                        reg, builder.extract_value(values, [p, h * lanes + lane]), i32(lane))
                regs.append(builder.fadd(reg, b) if biased else reg)
            bit = 1
            while bit < px:  # swap bit `bit` of the pixel (register) and channel (lane)
                swapped = list(regs)
                for v in range(px):
                    if v & bit:
                        continue
                    a, z = regs[v], regs[v | bit]
                    swapped[v] = shuffle(a, z, [lanes * bool(lane & bit) + (lane & ~bit)
                                                for lane in range(lanes)])
                    swapped[v | bit] = shuffle(a, z, [lanes * bool(lane & bit) + (lane | bit)
                                                      for lane in range(lanes)])
                regs, bit = swapped, bit << 1
            # now regs[v][j*px + p] is pixel p of channel h*lanes + j*px + v
            for v in range(px):
                for j in range(lanes // px):
                    values_row = shuffle(regs[v], ir.Constant(vector, ir.Undefined),
                                         list(range(j * px, (j + 1) * px)))
                    where = builder.gep(data, [at(h * lanes + j * px + v, 0)])
                    builder.store(values_row, builder.bitcast(where, row_type.as_pointer()),
                                  align=align)
        return context.get_dummy_value()

    return nbtypes.void(out, start, pitch, bias, row, tile), codegen
