"""How ``algorithm="auto"`` chooses, the im2col workspace limit, and thread control.

* :func:`choose` is a cheap rule measured on this kind of machine (2 AVX2 cores):
  Numba's direct kernels win when there is little arithmetic per output pixel (one
  input channel per group, i.e. depthwise, or small layers like the book's); the jit
  algorithm's register-tiled kernels win every other unit-stride layer with a kernel
  larger than 1x1 and a few channels per group (LeNet's, CIFAR's, small 3x3 layers);
  Winograd's F(2x2, 3x3) wins 3x3 stride-1 layers with 64 or more channels per group
  (ResNet's; F(4x4, 3x3) on large float32 outputs, see :func:`set_float32_precision`;
  dilated layers, on their phase sub-images, from 128 channels);
  im2col with BLAS GEMMs wins everywhere else (strided and pointwise layers, layers
  with 256 or more input channels per group, the gradients of deep layers on small
  outputs, the forward pass and weight gradient of one or two samples, and the weight
  gradient alone of layers large enough for im2col to split their samples between the
  threads).
  With AVX-512 the jit algorithm's implicit GEMM takes more (forward passes at any
  column length from 1024 output pixels, and those of winograd's layers below 28x28
  outputs, 48x48 below 128 channels; the weight gradient of strided layers, whose
  backward pass is then split: dX on im2col, dW on the jit algorithm), and winograd's
  F(2x2, 3x3) runs in float32 only from 256 channels.
  ``benchmarks/auto_rule.py`` measures the rule against the fastest algorithm.
  :func:`explain_choice` says why.
* :func:`set_autotune` (or ``NPCONV_AUTOTUNE=1``) replaces the rule by measurement,
  like cuDNN's benchmark mode: the first call of each new (geometry, dtype, operation,
  threads) times every candidate algorithm on random arrays of that shape and keeps
  the fastest, in memory and, with a cache file (``NPCONV_AUTOTUNE_CACHE``), on disk
  for later processes.
* :func:`set_workspace_limit` bounds the buffers im2col allocates per chunk (default
  256 MiB, or ``NPCONV_WORKSPACE_BYTES``; chunks are cache-sized anyway, so only a
  smaller limit changes anything); results are the same however the work is chunked.
* :func:`set_num_threads` sets Numba's and the BLAS library's thread counts together
  (``NPCONV_NUM_THREADS`` at import).
"""

from __future__ import annotations

import functools
import json
import math
import os
import time
from dataclasses import asdict, dataclass

import numpy as np

from .spec import ConvSpec

# Below this many multiply-adds per call a direct Numba kernel beats building im2col
# matrices and calling BLAS (measured with `npconv bench suite` on the book's layer
# and LeNet-sized layers).
SMALL_PROBLEM_MACS = 8_000_000
# ... except the backward pass of a layer with many weights per output pixel (C_out *
# C_in/G * KH * KW over N*OH*OW, at least GEMM_WEIGHTS_PER_PIXEL), small or not: the jit
# algorithm's kernels then write about as many partial sums of dW as they read inputs
# (and a strided layer's dX runs each stride phase on a handful of pixels), while
# im2col's two GEMMs are short but whole. Backward, jit / im2col, ms, on an AVX-512 Xeon:
# * stride 2: (1, 64, 14, 14) with 64 3x3 kernels (752 weights per pixel) 0.54 / 0.21;
#   (1, 128, 14, 14) with 128 (3009) 1.53 / 0.57; (1, 32, 14, 14) with 64 (376) 0.26 /
#   0.14; (2, 64, 14, 14) with 64 (376) 0.59 / 0.46; (1, 64, 28, 28) with 64 (188) 0.67
#   / 0.54; but (1, 48, 28, 28) with 48 (106) 0.47 / 0.43, (4, 32, 14, 14) with 64 (94)
#   0.38 / 0.42 and (1, 32, 28, 28) with 32 (47) 0.23 / 0.36;
# * stride 1 (the register-tiled kernels, on small problems the same): (1, 96, 14, 14)
#   with 96 (423) 1.04 / 0.68; (1, 96, 10, 10) with 96 (829) 0.87 / 0.54; (1, 80, 16,
#   16) with 80 (225) 0.88 / 0.65; (1, 64, 14, 14) with 96 (282) 0.73 / 0.57; (1, 96,
#   20, 20) with 96 (207) 1.27 / 1.06; (1, 64, 8, 8) with 64 (576) 0.41 / 0.22; (1, 64,
#   7, 7) with 128 (1504) 0.75 / 0.28; (1, 48, 12, 12) with 48 (144) 0.30 / 0.24; level
#   from 184 to 188 ((2, 64, 10, 10), (1, 64, 14, 14), (4, 64, 7, 7) with 64: 0.92-1.03x).
#   (1, 64, 10, 10) with 64 (369) measured 0.39 / 0.43 in one run, 0.40 / 0.26 in another.
# From 200: below it the wins were small (stride 2: 1.23x at 188, 1.07x at 106) and thin
# GEMMs lose ((8, 256, 14, 14) with 32 5x5 kernels, 130 weights per pixel: 12.9 / 16.1).
# But with AVX-512 a backward pass (not a small problem) of three or more samples whose
# jit gradients both run on the implicit GEMM (dX as the adjoint correlation,
# npconv.algorithms.jit.adjoint) stays on jit: backward, jit / im2col, ms, 128 3x3
# kernels: (3, 128, 10, 10) 1.44 / 1.81, (6, ...) 1.83 / 2.39, (3, 128, 12, 12) 1.66 /
# 2.21, (8, 128, 8, 8) 1.85 / 2.38, (8, 128, 7, 7) 1.71 / 1.99, (16, 128, 5, 5) 1.87 /
# 2.47, (16, 128, 4, 4) 1.32 / 1.96; (4, 96, 10, 10) with 96, 0.93 / 1.21; level at (3,
# 128, 8, 8) 1.01 / 1.06 and (4, 128, 7, 7) 1.19 / 1.15. With one or two samples im2col
# keeps them: (2, 128, 10, 10) 1.22 / 1.06, (1, 128, 14, 14) 1.15 / 0.96, (1, 128, 20,
# 20) 1.71 / 1.57, (1, 160, 28, 28) with 160 3.87 / 3.62, and so with 96 output
# channels, (2, 192, 14, 14) with 96 5x5 4.88 / 4.44, (1, 192, 28, 28) 8.36 / 7.40; but
# with up to FEW_PIXELS_JIT_MAX_OUT_CHANNELS jit wins those too (im2col's GEMMs short
# in M): (1, 192, 28, 28) with 64 5x5 4.6-5.0 / 7.3-7.4, (1, 128, 14, 14) with 64 3x3
# 0.49 / 0.70, (2, 256, 14, 14) 1.47 / 2.08, (2, 64, 10, 10) with 64 5x5 0.83 / 0.94;
# lost, (1, 96, 14, 14) with 64 5x5 1.33 / 1.19.
FEW_PIXELS_JIT_MAX_OUT_CHANNELS = 64
GEMM_WEIGHTS_PER_PIXEL = 200
# Winograd F(2x2, 3x3) pays off where its 16 GEMMs are wide enough for BLAS: measured
# 1.3-1.8x faster than the register-tiled kernels and im2col with 64-256 channels on
# 14x14-56x56 outputs; slower with 32 channels or fewer (the transforms dominate) and on
# 7x7 outputs (tiles padded to 8x8, few tiles per GEMM).
WINOGRAD_MIN_CHANNELS = 64
WINOGRAD_MIN_SIZE = 12
# In float32 the register-tiled kernels have since caught up with F(2x2) on narrow
# layers: with 64 channels, forward + backward, the tiled kernels against winograd were
# 1.3x (12x12 outputs), 1.2x (16x16), 1.03x (14x14) and 1.0x (20x20) as fast; with 80
# channels 1.03x (14x14); from 24x24 (F(4x4)) winograd won (1.07-1.35x), and with 96 or
# more channels on every size (1.16-1.36x on 10x10-14x14). float64 keeps the general
# threshold (64 channels, 28x28: winograd 2x faster).
WINOGRAD_NARROW_CHANNELS = 96
WINOGRAD_NARROW_MIN_SIZE = 20
# Its GEMMs need enough columns (tiles: samples x tiles per sample), F(2x2)'s more than
# F(4x4)'s, whose tiles carry 4 times the outputs. Measured per pass against the better
# of the register-tiled kernels and im2col: F(4x4) with 56 tiles (one 28x28 sample)
# 2.3-4.5x slower, 210 (one 56x56 sample) 1.2-1.6x slower, 224 (four 28x28 samples, 128
# channels) 0.85-1.15x, 336 (six) 1.3-1.5x faster, 420 (two 56x56 samples) level or
# faster; F(2x2) with 280 tiles (five 14x14 samples, 256 channels) 1.2-1.4x slower, from
# 560 level or faster on every pass (64, 128 and 256 channels).
WINOGRAD_MIN_TILES = {4: 300, 2: 500}  # by tile size m
# With AVX-512 and cheap weight transforms (winograd._WEIGHT_KERNELS), float32 layers with
# 128 or more channels need fewer. Backward, ms, winograd against the fastest other algorithm,
# on an AVX-512 Xeon: F(4x4) with 128 channels on 28x28, four samples (224 tiles) 5.7 /
# 7.8 (jit), three (168) 6.0 / 6.2; F(2x2) with 256 on 14x14, five samples (280) 9.4 /
# 11.2 (im2col), three (168) 9.5 / 7.6; but 64 channels, one 56x56 sample (210) 3.5 /
# 2.0 (jit), and a dilated layer, whose phases are copied in and out: one (256, 32, 32)
# sample with 256 kernels, dilation 2 (288 tiles), 10.4 / 9.2 (im2col). Undilated only.
# F(2x2) from 200 since its transforms allocate once per task: forward, (4, 256, 14, 14)
# (224 tiles) 3.0-3.1 / 3.7-3.8 (jit) in three runs.
WINOGRAD_AVX512_MIN_TILES = {4: 200, 2: 200}
# Since the GEMMs of a call that is not split by samples are split by transform index
# (npconv.algorithms.winograd._matmul), forward passes with
# WINOGRAD_AVX512_FORWARD_WIDE_TILES_CHANNELS or more channels need fewer tiles. Forward,
# winograd / the rule's pick before (jit's implicit GEMM, or im2col), ms, on an AVX-512
# Xeon: F(4x4), (2, 192, 28, 28) (112 tiles) 2.59 / 3.33, (2, 256, 28, 28) 4.19 / 5.98,
# (3, 256, 28, 28) 6.03 / 8.16, (2, 512, 28, 28) 17.4 / 26.4, (2, 256, 24, 24) (84) 3.84 /
# 4.06, but 128 channels (2, 128, 28, 28) 1.44 / 1.37; F(2x2) (from 256 channels), (2,
# 512, 14, 14) (112) 5.58 / 7.25, (2, 384, 16, 16) (144) 3.92 / 4.81, (1, 512, 20, 20)
# (110) 5.09 / 7.57, (1, 256, 20, 20) 1.78 / 2.01.
WINOGRAD_AVX512_FORWARD_WIDE_TILES_CHANNELS = 192
WINOGRAD_AVX512_FORWARD_WIDE_MIN_TILES = {4: 80, 2: 100}
# The thresholds above are the AVX2 machine's of the early rounds, before winograd's
# transforms got cheaper and its GEMMs were split between the threads by transform index
# (npconv.algorithms.winograd._matmul). Measured since with AVX-512 switched off (AVX2
# tiles, OpenBLAS as Haswell) on an AVX-512 Xeon, winograd against the faster of jit and
# im2col on 130 random undilated 3x3 layers (1-32 samples, 32-512 channels, 7x7 to 56x56),
# float32 on AVX2 follows its own thresholds (:func:`_avx2_winograd`):
# * F(4x4) (outputs from 24x24): backward from WINOGRAD_AVX2_F4_WIDE_CHANNELS["backward"]
#   channels at any tile count from WINOGRAD_AVX2_F4_MIN_TILES (0.36-0.69x the time, e.g.
#   (1, 256, 28, 28) 0.48, (2, 48, 56, 56) 0.56); forward from
#   WINOGRAD_AVX2_F4_WIDE_CHANNELS["forward"] too ((2, 96, 28, 28) 0.75, (1, 128, 28, 28)
#   0.73, (1, 384, 28, 28) 0.47); narrower layers from WINOGRAD_AVX2_MIN_CHANNELS at
#   WINOGRAD_MIN_TILES (64 channels forward: 220 tiles 1.32, 440 0.72; 32 backward: 220
#   tiles 1.09, 440 0.86, 1680 0.67, (32, 32, 56, 56) 18.6 ms against jit's 33.8).
# * F(2x2), from WINOGRAD_AVX2_F2_MIN_CHANNELS (backward with 32 channels: 1.06-1.62x
#   the time at 80-480 tiles): from WINOGRAD_AVX2_F2_WIDE_CHANNELS (forward 192,
#   backward 96) channels,
#   WINOGRAD_AVX2_F2_WIDE_MIN_TILES tiles ((2, 512, 14, 14), 112 tiles, forward 0.71,
#   backward 0.70; (8, 384, 8, 8) 0.80 / 0.71; (4, 128, 10, 10) backward 0.86; (1, 384,
#   10, 10), 30 tiles, 1.34 / 1.04, (2, 128, 8, 8) 1.37 / 1.40); narrower layers from
#   WINOGRAD_AVX2_F2_MIN_TILES and WINOGRAD_AVX2_F2_MIN_SIZE ((4, 128, 20, 20) forward
#   0.78, (16, 128, 10, 10) 0.83, (16, 64, 10, 10) backward 0.75; (8, 96, 12, 12)
#   forward 0.95, (16, 96, 8, 8) 1.49), the forward pass with fewer than
#   WINOGRAD_NARROW_CHANNELS channels as above ((16, 64, 10, 10) 1.32-1.83); and the
#   backward pass of WINOGRAD_AVX2_FEW_SAMPLES samples or fewer from
#   WINOGRAD_AVX2_F2_MIN_SIZE ((1, 48, 16, 16) 0.51, (1, 64, 14, 14) 0.59, (2, 48, 16,
#   16) 0.69, (2, 64, 20, 20) 0.89; with four, (4, 64, 14, 14) 1.01, (4, 48, 16, 16) 1.06).
#   These backward passes take winograd even below SMALL_PROBLEM_MACS, where the rule
#   otherwise sends them to jit's small-problem kernels or im2col ("small",
#   "few_pixels"): (1, 48, 16, 16) winograd 0.25 ms, im2col 0.49, jit 0.75; (1, 64, 10,
#   10) 0.26 / 0.43 / 1.13; (1, 48, 12, 12) 0.20 / 0.39 / 0.70.
# The dilated and float64 rules are unchanged.
WINOGRAD_AVX2_MIN_CHANNELS = {"forward": WINOGRAD_MIN_CHANNELS, "backward": 32}
WINOGRAD_AVX2_F2_MIN_CHANNELS = {"forward": WINOGRAD_MIN_CHANNELS, "backward": 48}
WINOGRAD_AVX2_F4_WIDE_CHANNELS = {"forward": 96, "backward": 48}
WINOGRAD_AVX2_F4_MIN_TILES = 50
WINOGRAD_AVX2_F2_WIDE_CHANNELS = {"forward": 192, "backward": 96}
WINOGRAD_AVX2_F2_WIDE_MIN_TILES = 100
WINOGRAD_AVX2_F2_WIDE_MIN_SIZE = 7
WINOGRAD_AVX2_F2_MIN_TILES = 400
WINOGRAD_AVX2_F2_MIN_SIZE = 10
WINOGRAD_AVX2_FEW_SAMPLES = 2
WINOGRAD_AVX512_FEW_TILES_MIN_CHANNELS = 128
# Backward passes on F(4x4) from WINOGRAD_AVX512_F4_BACKWARD_MIN_CHANNELS take
# WINOGRAD_AVX512_MIN_TILES too on outputs from WINOGRAD_AVX512_F4_BACKWARD_MIN_SIZE, since
# the GEMMs of calls not split by samples are split by transform index
# (npconv.algorithms.winograd._matmul). Backward, winograd / jit (the rule's pick), ms, on
# an AVX-512 Xeon: (4, 96, 28, 28) (224 tiles) 3.14 / 3.37, (4, 104, 28, 28) 3.57 / 4.76,
# (4, 112, 28, 28) 3.65 / 4.87, (4, 96, 32, 32) 3.55 / 4.19, (1, 112, 56, 56) 3.26 /
# 5.25; but (6, 96, 24, 24) (252) 3.88 / 3.58, and F(2x2) lost ((8, 96, 14, 14) 2.31 /
# 1.86).
WINOGRAD_AVX512_F4_BACKWARD_MIN_CHANNELS = 96
WINOGRAD_AVX512_F4_BACKWARD_MIN_SIZE = 28
# With AVX-512, float32 F(2x2, 3x3) (outputs below 24x24, or float32 precision
# "highest") lost with fewer than 256 channels: its transforms are memory-bound and the
# GEMMs it saves run twice as fast there. Backward, ms, winograd against the fastest
# other algorithm, on an AVX-512 Xeon: (21, 96, 14, 14) with 96 3x3 kernels 6.3 / 5.3
# (jit), (54, 64, 14, 14) 7.9 / 5.7 (jit), (16, 128, 14, 14) 7.5 / 7.4 (jit); but with
# 256 channels, since the weight transforms became cheap (winograd._WEIGHT_KERNELS), (16, 256,
# 14, 14) 21.1 / 29.0 (im2col) and (4, 256, 32, 32) dilated 2 (16x16 phases) 28.8 /
# 32.7 (im2col). (Before that change: 37.9 / 30.4 and 17.3 / 10.9 with one sample.)
# With AVX-512 the backward pass of a float32 layer goes to winograd from fewer tiles per
# GEMM still (WINOGRAD_AVX512_BACKWARD_MIN_TILES) with at least
# WINOGRAD_AVX512_BACKWARD_WIDE_CHANNELS channels per group, or with
# WINOGRAD_AVX512_FEW_TILES_MIN_CHANNELS and at least
# WINOGRAD_AVX512_BACKWARD_MIN_SAMPLES samples; a dilated layer with the wide channels
# when its phase sub-images are at least WINOGRAD_AVX512_BACKWARD_DILATED_MIN_SIZE a side.
# This since the weight transforms became generated kernels (winograd._WEIGHT_KERNELS:
# 0.6-0.7 ms less for each of a 128-channel layer's). Backward, ms, winograd against the
# fastest other algorithm, on an AVX-512 Xeon (tiles per GEMM): 128 channels, (2, 128,
# 24, 24) 2.87 / 3.23 (84), (2, 128, 28, 28) 2.91 / 3.96 (112), (2, 128, 32, 32) 3.55 /
# 5.48 (144), (3, 128, 28, 28) 4.66 / 5.17 (168); (2, 192, 28, 28) 5.44 / 8.77 (112);
# 256 and more, (1, 256, 40, 40) 10.6 / 15.9 (110), (2, 256, 24, 24) 8.4 / 11.5 (84),
# F(2x2): (2, 256, 14, 14) 4.06-4.3 / 4.22-4.7 in four runs (112), (2, 256, 16, 16) 4.70
# / 5.36 (144), (3, 256, 14, 14) 6.12 / 8.33 (168), (3, 512, 14, 14) 22.1 / 36.3 (168),
# (5, 256, 10, 10) 6.09 / 6.78 (150), (4, 128, 10, 10) 1.69 / 1.76 (120); dilated by 2, (1, 256,
# 48, 48) 16.3 / 23.0 (168, F(4x4)), (1, 256, 64, 64) 23.9 / 40.0, (1, 512, 28, 28) 25.5 /
# 30.7 (224, 14x14 phases), (1, 384, 32, 32) 17.4 / 21.9 (288). Slower: one sample of
# 128 channels, (1, 128, 28, 28) 2.94 / 2.36 (56), (1, 128, 40, 40) 4.79 / 4.17 (110),
# level at (1, 128, 48, 48) 5.84 / 5.99 (156); F(2x2) on fewer tiles, (1, 256, 14, 14)
# 3.55 / 2.45 (56), (4, 512, 7, 7) 12.8 / 11.0 (80);
# dilated layers with small phases, (1, 256, 24, 24) 6.24 / 5.64 (12x12), (3, 256, 14,
# 14) 9.03 / 8.62 (7x7).
WINOGRAD_AVX512_BACKWARD_MIN_TILES = {4: 80, 2: 110}
WINOGRAD_AVX512_BACKWARD_WIDE_CHANNELS = 256
# ... and with the wide channels, undilated, on outputs from this size (not
# WINOGRAD_MIN_SIZE): backward, ms, winograd / im2col, (8, 512, 7, 7) with 512 kernels
# 17.7 / 19.2 (160 tiles), (16, 512, 7, 7) 29.5 / 35.0, (32, 256, 7, 7) with 256 15.4 /
# 18.1, (16, 512, 10, 10) 39.7 / 65.2, (16, 256, 10, 10) 11.6 / 17.0 (but (4, 512, 7, 7)
# 12.8 / 11.0, 80 tiles).
WINOGRAD_AVX512_BACKWARD_MIN_SIZE = 7
# Backward, undilated, F(2x2) also from WINOGRAD_AVX512_F2_BACKWARD_MIN_CHANNELS (not
# WINOGRAD_AVX512_F2_MIN_CHANNELS), on outputs from WINOGRAD_AVX512_F2_BACKWARD_MIN_SIZE
# below the wide channels, since the transforms allocate once per task (winograd /
# fastest other, ms, 128 channels): (8, 128, 10, 10) 2.53 / 3.10, (32, 128, 10, 10) 8.2
# / 9.9, (50, 128, 10, 10) 12.5 / 15.6, (4, 128, 14, 14) 2.03 / 2.36, (16, 128, 14, 14)
# 6.62 / 7.40, (32, 128, 14, 14) 12.0 / 12.8, (16, 128, 20, 20) 11.8 / 12.4; 160
# channels, (16, 160, 14, 14) 9.2 / 14.4. Slower: 7x7 outputs, (16, 128, 7, 7) 3.32 /
# 2.68, (64, 128, 7, 7) 10.9 / 8.1; 96 channels, (16, 96, 14, 14) 4.22 / 4.06; dilated,
# (2, 128, 32, 32) by 2 (16x16 phases) 5.96 / 4.54.
WINOGRAD_AVX512_F2_BACKWARD_MIN_CHANNELS = 128
WINOGRAD_AVX512_F2_BACKWARD_MIN_SIZE = 10
# ... but from this size where both of the jit algorithm's gradients run on the implicit
# GEMM (:func:`_jit_backward_implicit`: 128 channels), since its dX runs there as the
# adjoint correlation. Backward, winograd / jit, ms, 128 channels: 10x10, (4, 128, 10,
# 10) 1.58 / 1.67, (8, ...) 2.38 / 2.22, (16, ...) 4.12 / 3.50, (32, ...) 7.60 / 6.07;
# 12x12 and 13x13, (4, 128, 12, 12) 1.77 / 1.81, (8, 128, 12, 12) 2.95 / 2.71, (8, 128,
# 13, 13) 3.40 / 3.10; level from 14x14: (2, 128, 14, 14) 1.44 / 1.60, (4, ...) 2.03 /
# 2.23, (8, ...) 3.44 / 3.49, (16, ...) 6.23 / 6.02, (6, 128, 16, 16) 3.48 / 3.35, (4,
# 128, 20, 20) 3.35 / 3.46, (8, ...) 6.08 / 5.87. With 160 channels (dW on the implicit
# GEMM past 1152 pairs) they tie from 10x10: (16, 160, 10, 10) 5.60 / 5.50, (8, 160, 12,
# 12) 4.04 / 4.20; with 192 (dW off it) winograd stays far ahead: (8, 192, 10, 10) 3.99 /
# 16.2 (im2col 5.10).
WINOGRAD_AVX512_F2_BACKWARD_IMPLICIT_MIN_SIZE = 14
WINOGRAD_AVX512_F2_BACKWARD_IMPLICIT_MAX_K = 1152  # (128 channels: where it was measured)
WINOGRAD_AVX512_BACKWARD_MIN_SAMPLES = 2
# One sample's backward pass on F(4x4) with 128 or more channels needs only
# WINOGRAD_AVX512_SINGLE_BACKWARD_F4_MIN_TILES (and so does its forward pass where the
# implicit GEMM does not keep it: WINOGRAD_AVX512_FORWARD_SINGLE_MAX_CHANNELS and the
# thresholds after it), since a call that is not split by samples
# splits its GEMMs by transform index (npconv.algorithms.winograd._matmul). Backward, ms,
# winograd / the rule's jit or im2col before, on an AVX-512 Xeon: (1, 128, 24, 24) (42
# tiles) 1.79 / 1.93, (1, 128, 28, 28) 1.83 / 2.44, (1, 128, 36, 36) 2.37 / 3.09, (1,
# 128, 40, 40) 2.64 / 3.49, (1, 192, 24, 24) 2.83 / 3.40, (1, 192, 28, 28) 2.99 / 4.63,
# (1, 256, 24, 24) 4.01 / 5.31, (1, 256, 28, 28) 4.40 / 7.75, (1, 512, 28, 28) 19.9 / 28.2;
# with 96 channels only on large outputs ((1, 96, 56, 56) 2.76 / 3.42, but (1, 96, 28,
# 28) 1.44 / 1.30, (1, 96, 32, 32) 1.55 / 1.50), so those keep WINOGRAD_MIN_TILES. (Every
# F(4x4) layer has 42 tiles or more: outputs of 24x24 and more.)
WINOGRAD_AVX512_SINGLE_BACKWARD_F4_MIN_TILES = 40
WINOGRAD_AVX512_BACKWARD_DILATED_MIN_SIZE = 14
WINOGRAD_AVX512_TILE = 4  # float32 winograd with AVX-512: F(4x4, 3x3), and F(2x2) ...
WINOGRAD_AVX512_F2_MIN_CHANNELS = 256  # ... from this many channels per group
# With AVX-512 the implicit GEMM's forward pass (:func:`npconv.algorithms.jit.implicit`)
# beats winograd's on outputs smaller than 28x28, and with fewer than 128 channels
# on outputs smaller than 48x48 (or ties), so a forward pass the implicit kernels take
# stays with them there. Forward, ms, implicit / winograd (both with their L1 and L2
# blocking, ``_implicit.FORWARD_K_BLOCK`` and ``winograd._chunk``, and the weight
# transform as one GEMM), on an AVX-512 Xeon: 24x24 outputs, (32, 64, ...) with 64 3x3
# kernels 3.9 / 5.8, (16, 128, ...) 7.3 / 8.6; 28x28, 64 channels 2.7 / 3.3, 192 in and
# 64 out 7.5 / 7.8, (32, 96, ...) 11.2 / 11.0; 32x32 and 40x40 with 64 channels 3.5 /
# 3.8 and 5.3 / 5.8, 96 on 40x40 11.4 / 11.1; but res28 9.9 / 9.3, (8, 256, 28, 28)
# 19.1 / 14.3, res56 10.3 / 9.9, (8, 128, 56, 56) 19.4 / 17.2, (8, 64, 64, 64) 8.0 /
# 7.1.
# Since winograd's transforms allocate once per task (and its weight transforms became
# generated kernels), 128 channels or more need only WINOGRAD_MIN_SIZE: implicit /
# winograd, ms, (16, 128, 24, 24) 8.01 / 7.26, (4, 256, 14, 14) 3.77 / 3.09 (F(2x2)),
# (16, 256, 14, 14) 12.0 / 9.8 (28 before).
WINOGRAD_AVX512_FORWARD_MIN_SIZE = 12
# ... and from WINOGRAD_AVX512_FORWARD_DEEP_CHANNELS channels, from 8x8 outputs (not
# WINOGRAD_MIN_SIZE either): their columns of 3456+ pairs make im2col's GEMM and the
# implicit GEMM slower than winograd's 16 GEMMs over channels. Forward, ms, winograd /
# the fastest other: (16, 512, 8, 8) 14.6 / 17.6, (32, 512, 8, 8) 31.2 / 31.8, (16, 512,
# 9, 9) 20.1 / 23.1, (16, 512, 10, 10) 20.2 / 28.3, (32, 512, 10, 10) 41.2 / 47.7, (16,
# 384, 10, 10) 11.0 / 13.7, (16, 384, 8, 8) 8.46 / 9.18, (64, 512, 8, 8) 54.8 / 58.2; lost,
# (48, 384, 8, 8) 25.3 / 22.6. On 7x7 outputs it is mixed ((16, 512, 7, 7) 13.8 / 15.5 but
# (32, 512, 7, 7) 28.2 / 26.6 and (4, 512, 7, 7) 5.44 / 4.05), and with 256 channels
# winograd loses ((16, 256, 7, 7) 4.31 / 3.78).
WINOGRAD_AVX512_FORWARD_DEEP_CHANNELS = 384
WINOGRAD_AVX512_FORWARD_DEEP_MIN_SIZE = 8
WINOGRAD_AVX512_FORWARD_NARROW_CHANNELS = 128
WINOGRAD_AVX512_FORWARD_NARROW_MIN_SIZE = 48
# Small batches too: winograd's transforms and its GEMMs over channels pay off with
# enough tiles, fewer the more channels (undilated layers of at most 128 channels, on
# outputs of at most 56x56, 28x28 from 96 channels). Forward, ms, implicit / winograd,
# by samples, on an AVX-512 Xeon: (N, 64, 56, 56) with 64 3x3 kernels, 2 samples (392
# tiles of F(4x4)) 1.40 / 1.74, 5 (980) 3.30 / 4.09, 8 (1568) 5.30 / 5.16, 16 10.6 /
# 9.9; (N, 128, 28, 28), 2 (98) 1.42 / 2.05, 5 3.05 / 4.03, 8 (392) 4.75 / 5.14, 16
# (784) 9.8 / 9.1; but (2, 96, 56, 56) 2.93 / 2.84, (2, 128, 56, 56) 4.99 / 4.28 and
# (2, 64, 112, 112) 5.02 / 4.81.
WINOGRAD_AVX512_FORWARD_MAX_WORK = 80_000  # tiles per GEMM x channels
# ... and from WINOGRAD_AVX512_FORWARD_NARROW_CHANNELS channels at most this much, since
# the transforms allocate once per task: (4, 128, 28, 28) 2.80 / 2.53, (8, 128, 28, 28)
# 5.58 / 4.48, but (2, 128, 28, 28) (14,336) 1.46 / 1.49 and (2, 96, 28, 28) 0.91 /
# 1.11.
WINOGRAD_AVX512_FORWARD_WIDE_MAX_WORK = 20_000
WINOGRAD_AVX512_FORWARD_FEW_MAX_CHANNELS = 128
WINOGRAD_AVX512_FORWARD_FEW_MAX_SIZE = 56
WINOGRAD_AVX512_FORWARD_FEW_WIDE_CHANNELS = 96  # from here on outputs of at most ...
WINOGRAD_AVX512_FORWARD_FEW_WIDE_MAX_SIZE = 28
# Fewer samples than threads: winograd cannot split the call between the threads by
# samples, and the implicit GEMM wins on more: up to 64 channels at any size, up to 192
# with at most WINOGRAD_AVX512_FORWARD_SINGLE_MAX_WORK tiles per GEMM x channels
# (undilated). One sample, two threads, forward, ms, implicit / winograd, on an AVX-512
# Xeon: 64 channels on 80x80 (420 tiles) 1.34 / 3.04, 112x112 2.57 / 4.20, 160x160
# 4.93 / 6.45, 224x224 9.67 / 12.65; 128 on 56x56 (210) 2.55 / 4.12, 64x64 3.22 / 4.63,
# 80x80 5.05 / 5.59, 96x96 (600) 7.07 / 7.10, 112x112 9.65 / 8.49; 160 on 56x56 3.99 /
# 5.00; 192 on 56x56 5.89 / 6.19, 80x80 11.49 / 9.01; 96 on 112x112 (812) 5.56 / 6.05;
# 256 on 56x56 10.65 / 8.90. Since a call winograd does not split by samples splits its
# GEMMs by transform index (npconv.algorithms.winograd._matmul), from 160 channels it wins
# on more, and one sample's F(4x4) takes its backward pass's fewer tiles
# (WINOGRAD_AVX512_SINGLE_BACKWARD_F4_MIN_TILES). Measured again, implicit / winograd:
# 128 on 28x28 0.81 / 1.05, 40x40 1.41 / 1.49, 48x48 1.83 / 1.71, 56x56 2.62 / 2.06; 160
# on 28x28 1.35 / 1.39, 56x56 3.90 / 2.65; 192 on 28x28 1.87 / 1.57, 40x40 3.10 / 2.37,
# 56x56 5.89 / 3.35; 256 on 24x24 2.68 / 2.32, 28x28 3.34 / 2.31; 512 on 28x28 im2col
# 14.1 / 9.94.
WINOGRAD_AVX512_FORWARD_SINGLE_NARROW_CHANNELS = 64
WINOGRAD_AVX512_FORWARD_SINGLE_MAX_CHANNELS = 160
WINOGRAD_AVX512_FORWARD_SINGLE_MAX_WORK = 20_000
# With one or two samples im2col's GEMMs beat the register-tiled kernels on the weight
# gradient (little work per task): 1.2-2.5x (64-192 channels, 3x3 and 5x5, 28x28-56x56),
# and on the whole backward pass of such layers (dX is level). From three samples the
# tiled kernels won again, and with few channels on every batch (one or two samples,
# 8-32 output channels: the tiled kernels 1.1-3x faster), so this needs 64 output
# channels per group and columns of K = 288 (channel, tap) pairs (32 channels x 3x3:
# im2col 1.2-1.3x faster). Their forward pass needs 128 output channels per group: im2col
# had been 1.1-1.4x faster on 6 of 7 such layers with 64-192 channels while idle
# OpenMP threads slept at once, but with their short spin the tiled kernels won on 7
# of 8 layers with 64-96 output channels (1.03-2.6x: (1, 96, 28, 28) with 96 3x3
# kernels 2.1 against 5.4 ms, (1, 192, 28, 28) with 64 5x5 7.6 against 13.3; lost by
# 1.05-1.15x with 96 channels dilated), and im2col on 3 of 4 with 128 (1.07-1.6x on 28x28
# and 32x32 outputs, dilated or not; the tiled kernels 1.25x on 56x56).
FEW_SAMPLES = 2
FEW_MIN_CHANNELS = 64
FEW_FORWARD_MIN_CHANNELS = 128
FEW_MIN_K = 288
# With AVX-512 (the implicit GEMM's dW, 32-pixel tiles for dX) the jit algorithm won the
# backward pass of such layers back where their columns are shorter than 1152 pairs
# (the implicit dW's limit with AVX-512 is 1152). Backward, jit / im2col, ms, on an
# AVX-512 Xeon: one 56x56 sample with 64 3x3 kernels (K = 576) 2.25 / 3.22 (1.38x in
# the rule's audit), 64 in and 128 out 4.9 / 5.2, 96 (K = 864) 5.1 / 5.9; two 28x28
# samples with 64 1.19 / 1.62, with 96 2.61 / 2.77; but K = 1152, one 28x28 sample with
# 128 channels 3.18 / 2.59, two 5.1 / 4.7, one 56x56 sample 9.6 / 9.0; two 28x28
# samples with 64 5x5 kernels (K = 1600) 6.1 / 4.0; 192 in and 64 out, 5x5, 13.5 / 6.2.
# Dilated layers won at 1152 too, once the implicit GEMMs ran cache-sized chunks of
# samples (npconv.algorithms._implicit.sample_chunk), dX as the adjoint correlation:
# backward, jit / im2col, ms, 128 3x3 kernels, dilation 2 unless said: (2, 128, 32, 32)
# 4.15 / 5.45 (dilation 4: 4.27 / 5.48), (1, 128, 32, 32) 2.65 / 3.03, (1, 128, 56, 56)
# 6.05 / 9.20, (2, 128, 24, 24) 2.78 / 3.23, (2, 128, 20, 20), dilation 3, 2.20 / 2.47;
# so with AVX-512 the backward pass of a dilated layer is not this case. Nor is one whose
# jit gradients both run on the implicit GEMM (the rule's "implicit_backward" case, before
# this one: :func:`_jit_backward_implicit`).
FEW_AVX512_MIN_K = 1152
# The backward pass (dX and dW together) of a stem-like layer, a handful of input
# channels per group (columns of at most STEM_MAX_K (channel, tap) pairs), goes to
# im2col on outputs of at least STEM_MIN_PIXELS, with STEM_MIN_CHANNELS output
# channels: im2col packs the column matrix once for both gradients, where the tiled
# kernels make two passes. Backward, tiled / im2col, ms: (64, 3, 48, 48) with 32 3x3
# kernels 19.2 / 14.3; (64, 3, 64, 64) 29.6 / 24.6 (1.23-1.49x in four audits);
# (16, 3, 128, 128) 31.0 / 27.2; (32, 3, 64, 64) with 64 27.0 / 22.3; but on 32x32
# outputs 6.5 / 6.8 (CIFAR's stem, 32 channels) and 14.6 / 13.4 (64), and 7.4 / 10.5
# with 16 5x5 kernels. Each gradient alone stays on the tiled kernels (level or faster
# on 6 of 7 of these layers: a network's first layer asks for dW only).
STEM_MAX_K = 36
STEM_MIN_PIXELS = 48 * 48
STEM_MIN_CHANNELS = 32
# With AVX-512 (32-pixel register tiles) the tiled kernels won it back below 64 output
# channels. Backward, tiled / im2col, ms, on an AVX-512 Xeon: (64, 3, 64, 64) with 32
# 3x3 kernels 11.3-14.9 / 13.3-16.9 in three runs; (32, 4, 64, 64) with 32, 7.3 / 7.9;
# (8, 3, 128, 128) with 48, 9.2 / 9.4; but (16, 3, 96, 96) with 64, 15.9 / 14.7.
STEM_AVX512_MIN_CHANNELS = 64
# One-dimensional kernels (1xK and Kx1, Inception's factorised layers) with 64 or more
# input and output channels per group: the register-tiled gradients lose to im2col's
# GEMMs, and so does the tiled forward pass of a Kx1 kernel from 128 channels (a 1xK
# one runs on the implicit GEMM: its rows are junk-heavy). Measured in one process,
# jit / im2col, median of 7, ms, backward: (16, 128, 17, 17) with 128 1x7 kernels
# 40.3 / 31.8, 7x1 33.0 / 28.2; 192 7x1 kernels 85.5 / 55.4; (16, 96, 17, 17) with 96
# 1x3 14.0 / 9.9; (16, 64, 28, 28) with 64 3x1 16.6 / 12.5; forward, the 128 and 192
# 7x1 layers 16.5 / 13.7 and 34.0 / 28.7 (the 64-channel 3x1 one level, 8.6 / 8.9).
ONE_DIM_MIN_CHANNELS = 64
ONE_DIM_FORWARD_MIN_CHANNELS = 128
# But with AVX-512 the backward pass stays on the jit algorithm up to this many channels
# per group, where its dW runs on the implicit GEMM: backward, jit / im2col, ms, on an
# AVX-512 Xeon, (16, 128, 17, 17) with 128 1x7 kernels 9.8 / 10.9, 7x1 8.0 / 9.9;
# (32, 128, 17, 17) with 128 7x1 17.3 / 20.9; (8, 128, 17, 17) 1x7 5.2 / 5.6; (16, 96,
# 17, 17) with 96 1x3 2.6 / 3.5; (16, 64, 28, 28) with 64 3x1 3.1 / 4.5; (16, 64, 35,
# 35) with 96 1x7 13.9 / 16.2. Beyond, im2col: 160 1x7 17.5 / 16.1, 192 7x1 41.7 / 20.2.
# Since both gradients run on the implicit GEMM, the backward pass goes to jit wherever
# they do (the rule's "implicit_backward" case, before this one) and here only where they
# do not: 192 7x1 kernels (dW's 192 output channels) 33.0 / 20.1.
# The float32 backward pass of a strided layer with at most 16 output channels per group
# goes to the jit algorithm (dW on the implicit GEMM, or below 8 channels on the stride
# phases; dX scattered into the stride phases of each input plane) while its output
# channels per group times its columns' (channel, tap) pairs, the scatter's work per
# input pixel, are at most STRIDED_BACKWARD_MAX_WORK. ResNeXt's stride-2 layer,
# (16, 128, 56, 56) with 32 groups of 4 3x3 kernels: 33.9-35.7 / 44.6-58.2. Backward,
# jit / im2col, ms, stride 2, median of 7 in one process (two runs where given):
# (16, 3, 112, 112) with 16 3x3 kernels (16 x 27) 5.1 / 7.8; (16, 32, 56, 56) with 8
# (8 x 288) 11.1-11.4 / 19.3-40.2; (16, 16, 56, 56) with 12 (12 x 144) 6.6 / 18.6-32.4;
# but with 16 on (16, 32, 56, 56) (16 x 288) 17.2 / 10.5, and on (16, 64, 56, 56)
# (16 x 576) 24.1-31.0 / 21.8-28.9. Not 1x1 kernels: their dX touches one phase in
# S_h*S_w, and the others' zeroing and interleaving cost more than the GEMM
# ((16, 64, 56, 56) with 16 stride-2 1x1 kernels: dX 5.3 / 3.1, backward 6.6-6.7 /
# 5.0-6.1).
STRIDED_BACKWARD_MAX_WORK = 2560
# A dilated 3x3 layer runs Winograd on its phase sub-images (their outputs must be at
# least WINOGRAD_MIN_SIZE a side), after copying x into them and y out. Measured against
# the register-tiled kernels, forward / backward: 256 and 512 channels 1.6-1.9x / 1.7-2.0x
# (dilation 2 and 3), 128 channels 0.95-1.23x / 1.08-1.39x, 64-96 channels 0.83-1.14x /
# 0.94-1.06x.
DILATED_WINOGRAD_MIN_CHANNELS = 128
# The register-tiled gradients lose to im2col's long GEMMs on small outputs with many
# input channels per group (ResNet's 7x7 stage: backward 2-3x slower; 10x10 with 128
# channels: 1.4x slower).
DEEP_MIN_CHANNELS = 128
# With AVX-512 the register-tiled gradients keep 128 channels on small outputs (columns
# of 1152 pairs). Backward, tiled / im2col, ms, on an AVX-512 Xeon, two runs: (40, 128,
# 8, 8) 7.3-7.7 / 9.1-9.2, (64, 128, 7, 7) 8.1-8.7 / 11.8-12.0, (32, 128, 11, 11)
# 10.4 / 12.4-12.7; 10x10 outputs level, within 10% either way ((16, 128, 10, 10)
# 4.9-6.1 / 5.5, (34-50, 128, 10, 10) 10.8-16.6 / 11.0-16.4); with 192 and 256 channels
# the tiled kernels were 2.2-3.6x slower.
DEEP_AVX512_MIN_CHANNELS = 192
# With 256 or more input channels per group (and 64 or more output channels, so the
# GEMMs are not thin) im2col wins every pass of the unit-stride layers that the
# register-tiled kernels would otherwise run, whatever the output size: forward 1.05-1.5x
# and backward 1.2-2.7x faster, measured on 3x3 (dilated or on 7x7-10x10 outputs), 5x5,
# 1x3 and 3x1 layers. With 192 input channels, or 32 output channels, the tiled kernels
# still won (5x5 on 28x28 and 14x14: 1.1-1.5x).
DEEP_ALL_CHANNELS = 256
DEEP_ALL_MIN_OUT_CHANNELS = 64
# With AVX-512, where BLAS gained more than the register-tiled kernels, the columns'
# length decides: the backward pass (and either gradient) of such a layer goes to
# im2col past 1600 (channel, tap) pairs, the forward pass (where the implicit GEMM does
# not take it) past 2304. Backward, tiled / im2col, ms, on an AVX-512 Xeon: 128 channels
# of 5x5 (K = 3200) on 14x14 and 28x28 outputs 1.8-2.9x slower, 192 of 3x3 (K = 1728)
# on 14x14 2.1-3.5x; at K = 1600 (64 channels of 5x5) a step (forward + backward) was
# level or either way: (4, 64, 28, 28) 9.7 / 9.6, (16, 64, 14, 14) 12.9 / 11.0, (16,
# 64, 28, 28) 33.5 / 36.6; with 128 channels of 3x3 (K = 1152) 3.1 / 2.7 and 8.7 / 9.5
# (4 and 16 samples); 32-64 channels of 3x3 and 32 of 5x5 (K <= 800) 0.3-0.7x. Forward,
# from 128 output channels: (4, 128, 14, 14) with 5x5 kernels (K = 3200) 3.3 / 3.0,
# (4, 192, 14, 14) 7.2 / 5.4; but (1, 192, 28, 28) with 64 5x5 kernels 2.4 / 3.2-3.3.
DEEP_ALL_AVX512_MAX_K = {"forward": 2304, "backward": 1600}
DEEP_ALL_AVX512_FORWARD_MIN_OUT_CHANNELS = 128
# ... and the gradients of kernels of 25 taps or more (5x5, 7x7) with 96 or more output
# channels, from DEEP_ALL_AVX512_WIDE_MIN_WORK output channels x pairs: backward, tiled
# / im2col, ms, on an AVX-512 Xeon, 5x5 kernels, padding 2: (8, 64, 28, 28) with 128
# (K = 1600) 37.2 / 23.4, 16 samples 66.7 / 45.4, (4, 64, 56, 56) 65.6 / 40.7, with 96
# 25.7 / 18.0, with 256 73.7 / 35.0; (8, 48, 28, 28) with 128 (K = 1200) 26.4 / 16.8;
# (8, 40, 28, 28) with 128 (K = 1000) 15.1 / 13.1; (8, 32, 28, 28) with 128 (K = 800)
# 12.2 / 10.6, 16 samples 23.7 / 20.8; (8, 24, 28, 28) with 128 (K = 600) 9.3 / 8.1;
# (8, 16, 28, 28) with 128 (K = 400) 6.4 / 5.8; level at 96 x 800 ((8, 32, 28, 28) with
# 96: 8.7 / 8.9). With 64 output channels K =
# 1600 stays level, above; 128 channels of 3x3, K = 1152, were level, or 1.4x faster
# on the tiled kernels dilated ((8, 128, 28, 28), dilation 2, 11.9 / 16.4).
DEEP_ALL_AVX512_WIDE_MIN_TAPS = 25
DEEP_ALL_AVX512_WIDE_MIN_OUT_CHANNELS = 96
DEEP_ALL_AVX512_WIDE_MIN_WORK = 51_200  # output channels x (channel, tap) pairs
# 1x1 strided layers (ResNet's projection shortcuts), whose column matrix is only a
# strided sample of x, go to im2col rather than the jit algorithm's implicit GEMM for dW
# (im2col 1.6-3.2x faster with 128-512 input channels, level with 160 and 64 outputs)
# and for the forward pass above this many input channels (im2col 1.6x faster with 512,
# 1.05-1.33x with 256 in five runs; the implicit GEMM won with 128-160, 1.1-1.7x).
IMPLICIT_POINTWISE_MAX_K = 192
# With AVX-512 the implicit GEMM would take unit-stride 1x1 layers too (any junk), but
# there it only wins on small outputs, where im2col's per-sample GEMMs are small.
# Forward, implicit / im2col, ms, on an AVX-512 Xeon: 14x14 outputs, (16, 128, ...)
# with 128 kernels 0.44 / 0.50, (16, 192, ...) with 192 0.89 / 0.88; 28x28, (16, 128,
# ...) with 512 7.0 / 5.0, (32, 128, ...) with 256 6.9 / 5.0, (16, 160, ...) with 64 1.31
# / 1.07; 56x56, (16, 128, ...) with 128 8.0 / 5.7.
IMPLICIT_POINTWISE_MAX_PIXELS = 256
# But with AVX-512, an unpadded unit-stride 1x1 layer with at most
# POINTWISE_JIT_MAX_CHANNELS output channels per group on such outputs runs every pass
# on the jit algorithm (:func:`npconv.algorithms.jit.pointwise`: the implicit GEMM,
# dX as the correlation of dZ with W's channel axes swapped), so that its step also
# never leaves Numba's threads for BLAS's. Forward + backward, ms, im2col's passes / the
# jit algorithm's, on an AVX-512 Xeon, 43 random such layers (2-64 samples, 16-1024
# input and 4-96 output channels, 7x7 to 16x16): 1.00-3.3x faster, 1.2x or more on 37
# of them; e.g. the suite's pointwise layer 1.75 / 1.57, (32, 512, 7, 7) with 64 2.02 /
# 1.56, (8, 256, 14, 14) with 32 1.41 / 0.55. With 128 output channels it was 0.85-1.6x,
# with 256 and 512 0.7-1.1x, and on 28x28 outputs 0.9-0.94x with 32-64.
POINTWISE_JIT_MAX_CHANNELS = 96
# Up to POINTWISE_JIT_WIDE_MAX_CHANNELS output channels, such a layer of at most
# POINTWISE_JIT_WIDE_MAX_MACS multiply-adds runs there too. Measured once the implicit
# forward kernel prefetched for 1x1 layers, forward + backward, im2col / jit, on an
# AVX-512 Xeon, 30 random layers (2-64 samples, 16-1024 input and 97-256 output
# channels, 7x7 to 16x16): up to 32 million multiply-adds jit was 1.24-2.17x faster on
# all 18 but a two-sample 16-channel one (0.81x, 0.8 million: too small for the rule's
# parallel kernels); above it mixed, 0.76-1.44x ((8, 256, 8, 8) with 256, 34 million,
# 0.82x; (8, 1024, 7, 7) with 102 0.76x; (64, 128, 8, 8) with 125 1.44x).
POINTWISE_JIT_WIDE_MAX_CHANNELS = 256
POINTWISE_JIT_WIDE_MAX_MACS = 32_000_000
# And on larger outputs a small layer of at least POINTWISE_JIT_FEW_MIN_SAMPLES samples
# (one sample is a single, two-threaded GEMM for im2col), at most
# POINTWISE_JIT_FEW_MAX_MACS multiply-adds. jit / im2col, ms, forward and backward, on an
# AVX-512 Xeon, 28x28 outputs: (2, 256, ...) with 64 1x1 kernels 0.21 / 0.50 and 0.63 /
# 1.11, (2, 64, ...) with 256 0.24 / 0.52 and 0.69 / 1.13, (2, 96, ...) with 96 0.13 /
# 0.28 and 0.36 / 0.58, (3, 256, ...) with 64 0.32 / 0.53 and 0.84 / 1.08, (3, 64, ...)
# with 256 0.35 / 0.47 and 0.99 / 1.11; mixed from 51 million ((4, 64, ...) with 256
# 0.45 / 0.47 and 1.27 / 1.09), slower from 100 million ((2, 256, ...) with 256 0.82 /
# 0.69 and 1.94 / 1.54) and with one sample ((1, 64, 48, 48) with 192 0.26 / 0.25 and
# 0.83 / 0.68).
POINTWISE_JIT_FEW_MAX_MACS = 40_000_000
POINTWISE_JIT_FEW_MIN_SAMPLES = 2
# The forward pass alone wins further: (7, 256, 28, 28) with 64 0.82 / 0.97, (7, 64, 28,
# 28) with 256 0.75 / 0.84, (7, 128, 28, 28) with 128 0.79 / 0.85 (90 million); but
# (10, 128, 28, 28) with 128 1.11 / 0.95 (128 million), (2, 256, 28, 28) with 256 0.82 /
# 0.69 (103 million).
POINTWISE_JIT_FEW_FORWARD_MAX_MACS = 96_000_000
# Past IMPLICIT_POINTWISE_MAX_K input channels the implicit GEMM's forward pass still
# won alone, on such outputs: im2col / implicit, ms, (16, 256, 14, 14) with 64 kernels
# (the suite's pointwise layer) 0.52-0.54 / 0.41-0.42, (32, 512, 7, 7) with 64 0.69 /
# 0.38. But not in a step: its backward pass runs on im2col, and by the next forward
# call the implicit GEMM's threads have gone to sleep, which costs about 0.1 ms to wake
# them. Forward + backward, ms, with the forward on im2col / implicit: the pointwise layer
# 1.81-1.87 / 1.89-2.02, (32, 512, 7, 7) 2.25 / 2.12, (16, 1024, 7, 7) with 128 3.43 /
# 3.41, (32, 256, 7, 7) with 128 2.03 / 2.14. So they stay on im2col.
# The weight gradient alone (a network's first layer needs no dX) of a layer on the
# implicit GEMM goes to im2col when im2col splits the call between the threads by
# samples (npconv._workers.shares: single-threaded BLAS per thread): measured 2.1-3.1x faster on
# four strided layers (ResNet's stride-2 3x3 with 8 and 16 samples, its 7x7 stem, a
# 32-channel stride-2 layer). The forward pass stays on the implicit GEMM (level or
# faster: 10.8 against 13.1 ms, 8.7 against 10.8, 18.3 against 17.6), and so does a
# layer too small to split (LeNet's second: 1.3 against 2.4 ms).
# With AVX-512 the implicit GEMM's dW beats im2col's on strided layers with columns of
# up to SPLIT_BACKWARD_MAX_K pairs, while their dX stays faster on im2col (a GEMM and
# col2im: im2col packs nothing for dX). So the backward pass of such a layer, which the
# rule gives im2col, is split: dX on im2col, dW on the jit algorithm
# (:mod:`npconv.algorithms._split`), and dW alone no longer goes to im2col's split by
# samples. ms, on an AVX-512 Xeon, im2col's backward / its dX alone + the implicit dW:
# the stride-2 ResNet layer, (16, 64, 56, 56) with 128 3x3 kernels, 19.8 / 9.4 + 8.8;
# eight samples 9.9 / 4.8 + 4.5; (16, 32, 56, 56) with 64 5x5 kernels at stride 2
# 17.5 / 8.6 + 4.9; but (10, 128, 28, 28) with 256 3x3 kernels (K = 1152) 10.8 / 5.6 +
# 6.9 (im2col's dW alone 5.6). float64 (whose implicit dW vectorises with AVX-512),
# im2col / split: the stride-2 ResNet layer 33.2 / 31.2, the 5x5 one 27.9 / 22.7,
# ResNet's 7x7 stem with 17 samples 22.7 / 18.8.
# Past it, with few output channels (npconv.algorithms.jit.IMPLICIT_WEIGHT_ANY_K_MAX_CHANNELS,
# where the implicit GEMM takes dW at any K), the implicit dW keeps winning: dW alone,
# implicit / im2col, ms: stride 2, (16, 64, 56, 56) with 128 5x5 kernels (K = 1600)
# 16.1 / 23.6, (8, 64, 56, 56) with 64 4.12 / 8.42, (16, 128, 28, 28) with 128 9.08 /
# 13.3, (16, 32, 112, 112) with 64 7x7 kernels 29.0 / 58.3; unit stride, (16, 64, 28,
# 28) with 64 5x5 6.81 / 14.9, (16, 32, 7, 7) with 32 7x7 0.39 / 1.37.
SPLIT_BACKWARD_MAX_K = 1024
# dX of a strided layer with up to PHASES_MAX_OUT_CHANNELS output channels per group
# (AVX-512: 128, AVX2: 64) goes to the jit algorithm, which runs it phase by phase on
# the implicit GEMM (:func:`npconv.algorithms.jit.phases`: each stride phase of dX a unit-stride
# correlation of dZ with the taps of W that reach it), rather than to im2col's GEMM
# (K = C_out/G) and col2im. Its dW stays where it was: on the jit algorithm where the
# implicit GEMM wins it (the backward pass then all on jit), else on im2col (the pair
# "jit+im2col"). dX, im2col / phases, ms, on an AVX-512 Xeon, 22 random stride-2 layers
# (3x3 to 7x7, 1-32 samples, 16-256 input channels): with 16-64 output channels
# 1.2-3.5x faster (e.g. (16, 32, 112, 112) with 16 5x5 kernels 18.3 / 5.2, (16, 64, 56,
# 56) with 64 3x3 6.0 / 4.5), with 128 1.1x (the stride-2 ResNet layer 8.3 / 7.6, (1,
# 256, 112, 112) 9.1 / 8.0); with 256 and 512 0.4-0.97x. Forward + backward 1.1-1.9x
# faster where dX moved (16 random such layers: 1.0-2.45x, and 0.89x with one sample),
# the stride-2 ResNet layer 1.0-1.03x. Not 1x1 kernels (with 16-32 output channels their
# dX was 0.74-0.87x as fast), nor FEW_SAMPLES or fewer samples (the stride-2 ResNet
# layer's step, one and two samples, 0.84x and 0.97x; (2, 128, 28, 28) 0.73x). With AVX2
# tiles (measured with AVX-512 switched off, OpenBLAS as Haswell) dX alone gained as
# much (the same 22 layers: 1.06-2.7x up to 128 output channels, 0.6-0.93x from 256),
# but steps with dW on im2col ("jit+im2col") only up to 64 output channels: 1.04-1.36x
# on six layers, and 0.98-1.03x on three with 128. So AVX2 stops at 64.
PHASES_MAX_OUT_CHANNELS = {32: 64, 64: 128}  # by the kernels' vector bytes
# With AVX2 tiles, since the implicit kernels ran cache-sized chunks of samples and walked
# K in blocks, a strided layer's dW on the implicit GEMM (K up to
# npconv.algorithms.jit.IMPLICIT_MAX_K) beats im2col's up to AVX2_STRIDED_WEIGHT_MAX_CHANNELS
# output channels per group (:func:`_implicit_weight_wins`), and the whole backward pass
# on the jit algorithm (dX phase by phase, dW implicit) beats both im2col and the pair
# "jit+im2col" up to PHASES_JIT_WEIGHT_MAX_OUT_CHANNELS. Measured with AVX-512 switched
# off (AVX2 tiles, OpenBLAS as Haswell) on an AVX-512 Xeon, stride 2, 3x3 kernels unless
# said, ms, jit / im2col: dW alone, (16, 64, 56, 56) with 128 kernels 10.7 / 12.0, (16,
# 64, 28, 28) with 96 2.14 / 2.85, with 128 2.78 / 3.43, with 192 4.27 / 4.56, with 256
# 5.79 / 5.55; (32, 32, 28, 28) with 80 1.75 / 2.61; (16, 16, 56, 56) with 128 5x5 7.14
# / 8.21. Backward, jit / im2col (auto, where it ran jit+im2col): the stride-2 ResNet
# layer 22.1 / 23.6, (16, 64, 56, 56) with 160 27.2 / 28.4, (16, 64, 28, 28) with 96
# 4.41 / 5.70, (16, 48, 56, 56) with 128 17.1 / 18.6, stride (2, 1) 42.0 / 44.0; (16, 64,
# 56, 56) with 64 11.5 / 13.9 (jit+im2col), (16, 32, 112, 112) with 32 14.3 / 18.8, (32,
# 64, 28, 28) with 48 4.70 / 6.55; but with 192, level or lost ((16, 64, 28, 28) 8.54 /
# 8.72, four samples 8.83 / 8.22), and with 256 11.3 / 10.7. Where dX stays on im2col
# (fewer than npconv.algorithms.jit.PHASES_MIN_CHANNELS input channels: stems) the
# backward pass is not split as with AVX-512 ("split_backward"): with 3 input channels and
# 7x7 kernels, split / im2col, (4, 3, 56, 56) with 128 kernels 2.09 / 1.87, with 160 2.45
# / 2.15, (16, 3, 112, 112) with 96 9.42 / 9.72, (32, 3, 112, 112) with 32 15.4 / 19.3.
# (With AVX-512 the limits above stay.)
AVX2_STRIDED_WEIGHT_MAX_CHANNELS = 160
PHASES_JIT_WEIGHT_MAX_OUT_CHANNELS = {32: AVX2_STRIDED_WEIGHT_MAX_CHANNELS, 64: 128}
# Once the phases ran a few samples at a time (npconv.algorithms._implicit.phase_chunk),
# layers of up to PHASES_FEW_SAMPLES_MAX_OUT_CHANNELS output channels per group won with
# one or two samples too. Backward, auto (im2col) / phases with dW on the jit algorithm
# or on im2col (the better), ms, on an AVX-512 Xeon, stride 2: (2, 64, 56, 56) with 64
# 3x3 kernels 1.93 / 1.37; (2, 32, 112, 112) with 64, 3.45 / 2.19; (1, 32, 112, 112)
# with 64, 2.30 / 1.29; (1, 16, 224, 224) with 32, 3.75 / 1.54; (1, 24, 64, 64) with 48,
# 0.68 / 0.49; (1, 32, 56, 56) with 64 5x5 kernels 1.40 / 1.17; (2, 64, 56, 56) with 64
# 5x5, 4.43 / 3.80. With 128 they did not, one sample or two: (1, 64, 56, 56) 1.64 /
# 1.65, (1, 128, 56, 56) 2.81 / 2.81, (2, 128, 28, 28) 1.59 / 1.90 (but (2, 64, 56, 56)
# 2.49 / 2.36 and (1, 64, 112, 112) 5.42 / 4.22). With AVX2 tiles (AVX-512 switched off,
# OpenBLAS as Haswell) the same rule (dW on im2col there) was 0.91-1.08x as fast as
# im2col on six of these layers, so AVX2 keeps to more than FEW_SAMPLES.
PHASES_FEW_SAMPLES_MAX_OUT_CHANNELS = {32: 0, 64: 64}  # by the kernels' vector bytes
DEFAULT_WORKSPACE_BYTES = 256 * 2**20

_workspace_limit = int(os.environ.get("NPCONV_WORKSPACE_BYTES", DEFAULT_WORKSPACE_BYTES))

# How much rounding error float32 convolutions may trade for speed, as PyTorch's
# ``torch.set_float32_matmul_precision``: "highest" keeps every algorithm's error that of
# a direct sum (within a few times); "high" (the default) lets Winograd use F(4x4, 3x3).
PRECISIONS = ("highest", "high")


def _check_precision(level) -> str:
    if not isinstance(level, str) or level not in PRECISIONS:
        raise ValueError(f"float32 precision must be one of {PRECISIONS}, got {level!r}")
    return level


_precision = _check_precision(os.environ.get("NPCONV_FLOAT32_PRECISION") or "high")


def set_float32_precision(level: str) -> None:
    """How much rounding error float32 convolutions may trade for speed
    (``NPCONV_FLOAT32_PRECISION`` at import). float64 always runs at "highest".

    Parameters
    ----------
    level : {"high", "highest"}
        ``"high"`` (the default): Winograd (``auto``'s choice for 3x3 stride-1 layers
        with many channels) uses F(4x4, 3x3) on outputs of at least
        ``winograd.F4_MIN_SIZE`` pixels a side: 1/4 of a direct convolution's
        multiply-adds, and float32 errors of 0.7e-6 to 3e-6 of the largest output on
        ResNet-like layers (y, dX and dW), 2-8x those of F(2x2, 3x3) and im2col, and an
        order of magnitude inside the parity tests' tolerance. ``"highest"``: Winograd
        uses only F(2x2, 3x3) (4/9 of the multiply-adds; errors 2e-7 to 8e-7, like
        im2col's).

    Raises
    ------
    ValueError
        For any other level.
    """
    global _precision
    _precision = _check_precision(level)
    _changed()


def get_float32_precision() -> str:
    """The level set by :func:`set_float32_precision`."""
    return _precision


# explain_choice's name for what runs a batch of no samples (no algorithm at all:
# npconv.algorithms._empty_batch)
EMPTY_BATCH = "none"


@dataclass(frozen=True)
class Choice:
    """What ``auto`` picked and the rule that picked it."""

    algorithm: str
    reason: str


def _rule(spec: ConvSpec, dtype, op: str) -> str:
    """Which case of the rule ``spec`` falls in (cheap: runs on every ``auto`` call)."""
    if spec.groups > 1 and spec.c_in_g == 1:
        return "depthwise"
    from .algorithms import jit

    if spec.flops // 2 <= SMALL_PROBLEM_MACS and not _avx2_small_winograd(spec, dtype, op):
        return "few_pixels" if _few_pixels(spec, op) and not jit.indexed(spec) else "small"

    size, itemsize = min(spec.oh, spec.ow), np.dtype(dtype).itemsize
    if (_winograd_wins(spec, dtype, op)
            and not (op == "forward" and _implicit_forward(spec, dtype))):
        return "winograd"
    if _pointwise_jit(spec, itemsize, op):
        return "pointwise"
    implicit_backward = (op == "backward" and spec.kh * spec.kw > 1
                         and _jit_backward_implicit(spec, itemsize))
    if _few_pixels(spec, op) and not (
            implicit_backward and (spec.n > FEW_SAMPLES
                                   or spec.c_out_g <= FEW_PIXELS_JIT_MAX_OUT_CHANNELS)):
        return "few_pixels"
    if implicit_backward:
        return "implicit_backward"
    deep = DEEP_AVX512_MIN_CHANNELS if jit.VECTOR_BYTES >= 64 else DEEP_MIN_CHANNELS
    if op != "forward" and spec.c_in_g >= deep and size < WINOGRAD_MIN_SIZE:
        return "deep"
    pointwise_gemm = spec.kh * spec.kw == 1 and (
        op == "grad_weight" or spec.c_in_g > IMPLICIT_POINTWISE_MAX_K
        or (spec.stride == (1, 1) and spec.oh * spec.ow > IMPLICIT_POINTWISE_MAX_PIXELS))
    if (op in ("forward", "grad_weight") and jit.implicit(spec, op, itemsize)
            and not pointwise_gemm):
        split = (op == "grad_weight" and _im2col_splits(spec)
                 and not _implicit_weight_wins(spec, itemsize))
        return "split_weight" if split else "implicit"
    if (op == "backward" and spec.stride != (1, 1) and itemsize == jit.IMPLICIT_ITEMSIZE
            and spec.kh * spec.kw > 1 and spec.c_out_g <= jit.IMPLICIT_SHORT_K_MAX_CHANNELS
            and spec.c_out_g * spec.c_in_g * spec.kh * spec.kw <= STRIDED_BACKWARD_MAX_WORK):
        return "strided_thin"
    if _phases_win(spec, itemsize, op):
        return ("phases" if op == "grad_input" or _implicit_weight_wins(spec, itemsize)
                else "phases_gemm")
    if (op == "backward" and spec.stride != (1, 1) and spec.kh * spec.kw > 1
            and spec.n > FEW_SAMPLES and jit.VECTOR_BYTES >= 64
            and _implicit_weight_wins(spec, itemsize)):
        return "split_backward"
    if ((spec.kh == 1) != (spec.kw == 1) and spec.stride == (1, 1)
            and min(spec.c_in_g, spec.c_out_g) >= ONE_DIM_MIN_CHANNELS
            and (op == "backward"
                 or (op == "forward" and spec.kw == 1
                     and spec.c_in_g >= ONE_DIM_FORWARD_MIN_CHANNELS))):
        return "one_dim"
    if (spec.stride == (1, 1) and spec.kh * spec.kw > 1  # what the tiled kernels would run
            and spec.c_out_g >= DEEP_ALL_MIN_OUT_CHANNELS
            and (spec.c_in_g >= DEEP_ALL_CHANNELS or _long_columns(spec, op))):
        return "deep_all"
    parts = {"backward": ("grad_input", "grad_weight")}.get(op, (op,))
    if spec.kh * spec.kw > 1 and all(jit.tiled(spec, part, itemsize) for part in parts):
        few = (op != "grad_input" and spec.n <= FEW_SAMPLES
               and spec.c_out_g >= (FEW_FORWARD_MIN_CHANNELS if op == "forward"
                                    else FEW_MIN_CHANNELS)
               and spec.c_in_g * spec.kh * spec.kw >= FEW_MIN_K
               and (op == "forward" or jit.VECTOR_BYTES < 64
                    or (spec.c_in_g * spec.kh * spec.kw >= FEW_AVX512_MIN_K
                        and spec.dilation == (1, 1))))
        stem = (op == "backward" and spec.c_in_g * spec.kh * spec.kw <= STEM_MAX_K
                and spec.c_out_g >= (STEM_AVX512_MIN_CHANNELS if jit.VECTOR_BYTES >= 64
                                     else STEM_MIN_CHANNELS)
                and spec.oh * spec.ow >= STEM_MIN_PIXELS)
        return "few" if few else "stem" if stem else "tiled"
    return "gemm"


def _few_pixels(spec: ConvSpec, op: str) -> bool:
    """Whether a backward ``op`` has :data:`GEMM_WEIGHTS_PER_PIXEL` or more weights per
    output pixel."""
    weights = spec.c_out * spec.c_in_g * spec.kh * spec.kw
    return op != "forward" and weights >= GEMM_WEIGHTS_PER_PIXEL * spec.n * spec.oh * spec.ow


def _pointwise_jit(spec: ConvSpec, itemsize: int, op: str) -> bool:
    """Whether every pass of a 1x1 layer goes to the jit algorithm's implicit GEMM
    (:data:`POINTWISE_JIT_MAX_CHANNELS`, :data:`POINTWISE_JIT_WIDE_MAX_CHANNELS` up to
    :data:`POINTWISE_JIT_WIDE_MAX_MACS`, or :data:`POINTWISE_JIT_FEW_MAX_MACS` and the
    forward pass's :data:`POINTWISE_JIT_FEW_FORWARD_MAX_MACS`; ``op``'s parts must fit the
    workspace)."""
    from .algorithms import jit

    small_outputs = spec.oh * spec.ow <= IMPLICIT_POINTWISE_MAX_PIXELS
    few = (not small_outputs and spec.n >= POINTWISE_JIT_FEW_MIN_SAMPLES
           and spec.flops // 2 <= (POINTWISE_JIT_FEW_FORWARD_MAX_MACS if op == "forward"
                                   else POINTWISE_JIT_FEW_MAX_MACS))
    wide = (spec.c_out_g <= POINTWISE_JIT_WIDE_MAX_CHANNELS
            and spec.flops // 2 <= POINTWISE_JIT_WIDE_MAX_MACS)
    if not (jit.pointwise(spec, itemsize)
            and (few or (small_outputs and (spec.c_out_g <= POINTWISE_JIT_MAX_CHANNELS
                                            or wide)))):
        return False
    parts = {"backward": ("grad_input", "grad_weight")}.get(op, (op,))
    return all(jit.adjoint(spec, itemsize) is not None if part == "grad_input"
               else jit.implicit(spec, part, itemsize) for part in parts)


def _phases_win(spec: ConvSpec, itemsize: int, op: str) -> bool:
    """Whether dX of a strided layer goes to the jit algorithm's phases
    (:data:`PHASES_MAX_OUT_CHANNELS` for this machine's vector width, or for a backward
    pass whose dW the implicit GEMM wins :data:`PHASES_JIT_WEIGHT_MAX_OUT_CHANNELS`; with
    :data:`FEW_SAMPLES` or fewer, :data:`PHASES_FEW_SAMPLES_MAX_OUT_CHANNELS`)."""
    from .algorithms import jit

    limit = (PHASES_JIT_WEIGHT_MAX_OUT_CHANNELS if op == "backward"
             and _implicit_weight_wins(spec, itemsize) else PHASES_MAX_OUT_CHANNELS)
    return (op in ("backward", "grad_input") and spec.kh * spec.kw > 1
            and (spec.n > FEW_SAMPLES
                 or spec.c_out_g <= PHASES_FEW_SAMPLES_MAX_OUT_CHANNELS[jit.VECTOR_BYTES])
            and spec.c_out_g <= limit[jit.VECTOR_BYTES]
            and jit.phases(spec, itemsize))


# The backward pass of a unit-stride layer (not 1x1: the pointwise rules above) whose jit
# gradients both run on the implicit GEMM, dX as the adjoint correlation
# (npconv.algorithms.jit.adjoint) and dW (any K up to
# npconv.algorithms.jit.IMPLICIT_WEIGHT_ANY_K_MAX_CHANNELS output channels per group), goes
# to jit when winograd does not take it: the rule's "implicit_backward" case, ahead of the
# im2col cases below it (few_pixels keeps one or two samples). Backward, jit / im2col,
# ms, on an AVX-512 Xeon: 128 3x3 kernels, one sample, 28x28 2.23 / 2.37, 32x32 2.59 /
# 2.98, 40x40 3.45 / 4.86, 48x48 4.63 / 6.45, two 20x20 samples 2.24 / 2.50 (these were
# "few"); (16, 160, 17, 17) with 160 1x7 kernels 12.3 / 16.0, 7x1 12.0 / 14.7, (8, 192, 14,
# 14) with 64 1x7 2.18 / 4.46, (16, 192, 17, 17) with 64 7x1 4.98 / 10.9 ("one_dim");
# (2, 64, 28, 28) with 64 5x5 2.25 / 4.16, (1, 32, 56, 56) with 64 7x7 4.19 / 7.70
# ("few"); (16, 64, 4, 4) with 32 5x5 0.37 / 1.53, (32, 64, 4, 4) with 64 1.03 / 3.20
# ("few_pixels"); (8, 192, 28, 28) with 64 5x5 21.8 / 47.2, (4, 64, 17, 17) with 96 7x7
# 5.64 / 7.89 ("deep_all"); (16, 512, 7, 7) with 128 3x3 9.27 / 14.0 ("deep").
def _jit_backward_implicit(spec: ConvSpec, itemsize: int, max_k: float = math.inf) -> bool:
    """Whether, with AVX-512, both of the jit algorithm's gradients of ``spec`` run on
    the implicit GEMM: dW (with columns of at most ``max_k`` pairs), and dX as the
    adjoint correlation (finite weights)."""
    from .algorithms import jit

    return (jit.VECTOR_BYTES >= 64 and jit.implicit(spec, "grad_weight", itemsize)
            and spec.c_in_g * spec.kh * spec.kw <= max_k
            and jit.adjoint(spec, itemsize) is not None)


def _long_columns(spec: ConvSpec, op: str) -> bool:
    """Whether, with AVX-512, ``spec``'s columns are too long for the register-tiled
    kernels (:data:`DEEP_ALL_AVX512_MAX_K`; for the gradients of wide layers with large
    kernels, :data:`DEEP_ALL_AVX512_WIDE_MIN_WORK`)."""
    from .algorithms import jit

    if op == "forward" and spec.c_out_g < DEEP_ALL_AVX512_FORWARD_MIN_OUT_CHANNELS:
        return False
    limit = DEEP_ALL_AVX512_MAX_K["forward" if op == "forward" else "backward"]
    k = spec.c_in_g * spec.kh * spec.kw
    wide = (op != "forward" and spec.kh * spec.kw >= DEEP_ALL_AVX512_WIDE_MIN_TAPS
            and spec.c_out_g >= DEEP_ALL_AVX512_WIDE_MIN_OUT_CHANNELS
            and spec.c_out_g * k >= DEEP_ALL_AVX512_WIDE_MIN_WORK)
    return jit.VECTOR_BYTES >= 64 and (k > limit or wide)


def _deep_forward(spec: ConvSpec) -> bool:
    """Whether an undilated layer's forward pass has the channels that take winograd from
    :data:`WINOGRAD_AVX512_FORWARD_DEEP_MIN_SIZE` (AVX-512 float32, asked by the callers)."""
    return (min(spec.c_in_g, spec.c_out_g) >= WINOGRAD_AVX512_FORWARD_DEEP_CHANNELS
            and spec.dilation == (1, 1))


def _implicit_forward(spec: ConvSpec, dtype) -> bool:
    """Whether a forward pass in winograd's part of the rule stays on the implicit GEMM
    (AVX-512: small outputs, :data:`WINOGRAD_AVX512_FORWARD_MIN_SIZE` and the thresholds
    after it, few tiles, :data:`WINOGRAD_AVX512_FORWARD_MAX_WORK`, or fewer samples than
    threads, :data:`WINOGRAD_AVX512_FORWARD_SINGLE_MAX_WORK`)."""
    from .algorithms import jit, winograd

    size = min(winograd.phase_size(spec))
    channels = min(spec.c_in_g, spec.c_out_g)
    narrow = channels < WINOGRAD_AVX512_FORWARD_NARROW_CHANNELS
    small = size < (WINOGRAD_AVX512_FORWARD_NARROW_MIN_SIZE if narrow
                    else WINOGRAD_AVX512_FORWARD_DEEP_MIN_SIZE if _deep_forward(spec)
                    else WINOGRAD_AVX512_FORWARD_MIN_SIZE)
    wide = channels >= WINOGRAD_AVX512_FORWARD_FEW_WIDE_CHANNELS
    work = winograd.gemm_width(spec, dtype) * channels  # tiles per GEMM x channels
    few = (spec.dilation == (1, 1) and channels <= WINOGRAD_AVX512_FORWARD_FEW_MAX_CHANNELS
           and size <= (WINOGRAD_AVX512_FORWARD_FEW_WIDE_MAX_SIZE if wide
                        else WINOGRAD_AVX512_FORWARD_FEW_MAX_SIZE)
           and work <= (WINOGRAD_AVX512_FORWARD_MAX_WORK if narrow
                        else WINOGRAD_AVX512_FORWARD_WIDE_MAX_WORK))
    single = (spec.n < get_num_threads() and spec.dilation == (1, 1)
              and (channels <= WINOGRAD_AVX512_FORWARD_SINGLE_NARROW_CHANNELS
                   or (channels <= WINOGRAD_AVX512_FORWARD_SINGLE_MAX_CHANNELS
                       and work <= WINOGRAD_AVX512_FORWARD_SINGLE_MAX_WORK)))
    return (jit.VECTOR_BYTES >= 64 and (small or few or single)
            and jit.implicit(spec, "forward", np.dtype(dtype).itemsize))


def _implicit_weight_wins(spec: ConvSpec, itemsize: int) -> bool:
    """Whether the implicit GEMM's dW beats im2col's on a layer it runs (AVX-512, columns
    of at most :data:`SPLIT_BACKWARD_MAX_K` pairs, or any with at most
    :data:`npconv.algorithms.jit.IMPLICIT_WEIGHT_ANY_K_MAX_CHANNELS` output channels per
    group; AVX2, strided layers with at most :data:`AVX2_STRIDED_WEIGHT_MAX_CHANNELS`)."""
    from .algorithms import jit

    if jit.VECTOR_BYTES < 64:
        return (spec.stride != (1, 1) and spec.c_out_g <= AVX2_STRIDED_WEIGHT_MAX_CHANNELS
                and jit.implicit(spec, "grad_weight", itemsize))
    return (jit.implicit(spec, "grad_weight", itemsize)
            and (spec.c_in_g * spec.kh * spec.kw <= SPLIT_BACKWARD_MAX_K
                 or spec.c_out_g <= jit.IMPLICIT_WEIGHT_ANY_K_MAX_CHANNELS))


def _im2col_splits(spec: ConvSpec) -> bool:
    """Whether im2col splits ``spec``'s samples between the threads now."""
    from . import _workers

    return len(_workers.shares(spec)) > 1


def _winograd_wins(spec: ConvSpec, dtype, op: str) -> bool:
    """Whether ``op`` on ``spec`` is in the winograd part of the rule (the thresholds
    above)."""
    from .algorithms import jit, winograd

    if winograd.unsupported(spec) is not None:
        return False
    channels = min(spec.c_in_g, spec.c_out_g)
    dilated = spec.dilation != (1, 1)
    if jit.VECTOR_BYTES < 64 and np.dtype(dtype) == np.float32 and not dilated:
        return (_avx2_winograd(spec, dtype, op)
                and winograd.phase_bytes(spec, np.dtype(dtype).itemsize) <= workspace_limit())
    avx512 = jit.VECTOR_BYTES >= 64 and np.dtype(dtype) == np.float32
    backward = avx512 and op != "forward" and not dilated
    if (avx512 and winograd.tile_size(spec, dtype) != WINOGRAD_AVX512_TILE
            and channels < (WINOGRAD_AVX512_F2_BACKWARD_MIN_CHANNELS if backward
                            else WINOGRAD_AVX512_F2_MIN_CHANNELS)):
        return False
    narrow = np.dtype(dtype) == np.float32 and channels < WINOGRAD_NARROW_CHANNELS
    size = WINOGRAD_NARROW_MIN_SIZE if narrow else WINOGRAD_MIN_SIZE
    if avx512 and op == "forward" and _deep_forward(spec):
        size = WINOGRAD_AVX512_FORWARD_DEEP_MIN_SIZE
    if backward and channels >= WINOGRAD_AVX512_BACKWARD_WIDE_CHANNELS:
        size = WINOGRAD_AVX512_BACKWARD_MIN_SIZE
    elif backward and channels >= WINOGRAD_AVX512_F2_BACKWARD_MIN_CHANNELS:
        implicit = _jit_backward_implicit(spec, np.dtype(dtype).itemsize,
                                          WINOGRAD_AVX512_F2_BACKWARD_IMPLICIT_MAX_K)
        size = (WINOGRAD_AVX512_F2_BACKWARD_IMPLICIT_MIN_SIZE if implicit
                else WINOGRAD_AVX512_F2_BACKWARD_MIN_SIZE)
    return (channels >= (DILATED_WINOGRAD_MIN_CHANNELS if dilated else WINOGRAD_MIN_CHANNELS)
            and min(winograd.phase_size(spec)) >= size
            and winograd.gemm_width(spec, dtype) >= _winograd_min_tiles(spec, dtype, op)
            and winograd.phase_bytes(spec, np.dtype(dtype).itemsize) <= workspace_limit())


def _avx2_small_winograd(spec: ConvSpec, dtype, op: str) -> bool:
    """Whether a gradient below :data:`SMALL_PROBLEM_MACS` goes to winograd (AVX2 tiles,
    float32, undilated: :func:`_avx2_winograd`)."""
    from .algorithms import jit

    return (op != "forward" and jit.VECTOR_BYTES < 64 and np.dtype(dtype) == np.float32
            and spec.dilation == (1, 1) and _winograd_wins(spec, dtype, op))


def _avx2_winograd(spec: ConvSpec, dtype, op: str) -> bool:
    """:func:`_winograd_wins` for an undilated float32 layer with AVX2 tiles (the
    WINOGRAD_AVX2 thresholds)."""
    from .algorithms import winograd

    side = "forward" if op == "forward" else "backward"
    channels = min(spec.c_in_g, spec.c_out_g)
    size = min(winograd.phase_size(spec))
    tiles = winograd.gemm_width(spec, dtype)
    if channels < WINOGRAD_AVX2_MIN_CHANNELS[side]:
        return False
    if winograd.tile_size(spec, dtype) == 4:
        return tiles >= (WINOGRAD_AVX2_F4_MIN_TILES
                         if channels >= WINOGRAD_AVX2_F4_WIDE_CHANNELS[side]
                         else WINOGRAD_MIN_TILES[4])
    if channels < WINOGRAD_AVX2_F2_MIN_CHANNELS[side]:
        return False
    if channels >= WINOGRAD_AVX2_F2_WIDE_CHANNELS[side]:
        return size >= WINOGRAD_AVX2_F2_WIDE_MIN_SIZE and tiles >= WINOGRAD_AVX2_F2_WIDE_MIN_TILES
    if side == "forward" and channels < WINOGRAD_NARROW_CHANNELS:
        return size >= WINOGRAD_NARROW_MIN_SIZE and tiles >= WINOGRAD_MIN_TILES[2]
    few = side == "backward" and spec.n <= WINOGRAD_AVX2_FEW_SAMPLES
    return size >= WINOGRAD_AVX2_F2_MIN_SIZE and (few or tiles >= WINOGRAD_AVX2_F2_MIN_TILES)


def _winograd_min_tiles(spec: ConvSpec, dtype, op: str) -> int:
    """The tiles per GEMM winograd needs (:data:`WINOGRAD_MIN_TILES`; with AVX-512,
    float32, no dilation and :data:`WINOGRAD_AVX512_FEW_TILES_MIN_CHANNELS` channels,
    :data:`WINOGRAD_AVX512_MIN_TILES`; backward, :data:`WINOGRAD_AVX512_BACKWARD_MIN_TILES`
    where the thresholds after it allow, on F(4x4) from
    :data:`WINOGRAD_AVX512_F4_BACKWARD_MIN_CHANNELS` the general ones on outputs from
    :data:`WINOGRAD_AVX512_F4_BACKWARD_MIN_SIZE`; one sample on F(4x4), either pass,
    :data:`WINOGRAD_AVX512_SINGLE_BACKWARD_F4_MIN_TILES`; forward from
    :data:`WINOGRAD_AVX512_FORWARD_WIDE_TILES_CHANNELS`,
    :data:`WINOGRAD_AVX512_FORWARD_WIDE_MIN_TILES`)."""
    from .algorithms import jit, winograd

    m = winograd.tile_size(spec, dtype)
    if not (jit.VECTOR_BYTES >= 64 and np.dtype(dtype) == np.float32):
        return WINOGRAD_MIN_TILES[m]
    channels = min(spec.c_in_g, spec.c_out_g)
    wide = channels >= WINOGRAD_AVX512_BACKWARD_WIDE_CHANNELS
    if spec.dilation != (1, 1):
        few = (op != "forward" and wide
               and min(winograd.phase_size(spec)) >= WINOGRAD_AVX512_BACKWARD_DILATED_MIN_SIZE)
        return (WINOGRAD_AVX512_BACKWARD_MIN_TILES if few else WINOGRAD_MIN_TILES)[m]
    if channels < WINOGRAD_AVX512_FEW_TILES_MIN_CHANNELS:
        f4_backward = (op != "forward" and m == 4
                       and channels >= WINOGRAD_AVX512_F4_BACKWARD_MIN_CHANNELS
                       and min(winograd.phase_size(spec)) >= WINOGRAD_AVX512_F4_BACKWARD_MIN_SIZE)
        return (WINOGRAD_AVX512_MIN_TILES if f4_backward else WINOGRAD_MIN_TILES)[m]
    if m == 4 and spec.n < WINOGRAD_AVX512_BACKWARD_MIN_SAMPLES:
        return WINOGRAD_AVX512_SINGLE_BACKWARD_F4_MIN_TILES  # one sample
    if op != "forward" and (wide or spec.n >= WINOGRAD_AVX512_BACKWARD_MIN_SAMPLES):
        return WINOGRAD_AVX512_BACKWARD_MIN_TILES[m]
    if op == "forward" and channels >= WINOGRAD_AVX512_FORWARD_WIDE_TILES_CHANNELS:
        return WINOGRAD_AVX512_FORWARD_WIDE_MIN_TILES[m]
    return WINOGRAD_AVX512_MIN_TILES[m]


_ALGORITHM = {"depthwise": "jit", "small": "jit", "few_pixels": "im2col",
              "implicit_backward": "jit",
              "winograd": "winograd", "deep": "im2col", "pointwise": "jit",
              "deep_all": "im2col", "implicit": "jit", "split_weight": "im2col",
              "tiled": "jit", "few": "im2col", "stem": "im2col", "strided_thin": "jit",
              "one_dim": "im2col", "gemm": "im2col", "split_backward": "im2col+jit",
              "phases": "jit", "phases_gemm": "jit+im2col"}


def choose(spec: ConvSpec, dtype, op: str) -> str:
    """The algorithm name ``"auto"`` uses for ``op`` on ``spec`` (see :func:`explain_choice`);
    ``spec`` has at least one sample (an empty batch never reaches an algorithm)."""
    if _autotune["enabled"]:
        return _measured(spec, dtype, op).algorithm
    return _ALGORITHM[_rule(spec, dtype, op)]


def explain_choice(spec: ConvSpec, dtype=np.float32, op: str = "forward") -> Choice:
    """The algorithm ``"auto"`` uses for ``op`` on ``spec``, with the reason.

    With autotuning on this measures (once) and reports the timings.

    Parameters
    ----------
    spec : ConvSpec
        From :func:`npconv.spec.plan_conv2d` (``plan.spec``).
    dtype : numpy dtype
    op : {"forward", "backward", "grad_input", "grad_weight"}
    """
    if op not in OPS:
        raise ValueError(f"op must be one of {OPS}, got {op!r}")
    if spec.n == 0:
        return Choice(EMPTY_BATCH, "an empty batch (N = 0): nothing to compute; y and dX "
                                   "come back empty and dW and dB as zeros, as in PyTorch")
    if _autotune["enabled"]:
        return _measured(spec, dtype, op)

    case, macs = _rule(spec, dtype, op), spec.flops // 2
    k = spec.c_in_g * spec.kh * spec.kw
    reason = {
        "depthwise": f"one input channel per group (groups={spec.groups}): a GEMM would have "
                     f"K = {k}, too thin for BLAS, so the direct Numba kernel wins",
        "small": f"{macs:,} multiply-adds <= {SMALL_PROBLEM_MACS:,}: too small for im2col + "
                 f"BLAS to pay for their set-up" + _small_path(spec, dtype),
        "few_pixels": f"{spec.c_out * k:,} weights for {spec.n * spec.oh * spec.ow} output "
                      f"pixels (at least {GEMM_WEIGHTS_PER_PIXEL} per pixel): im2col's short "
                      f"GEMMs beat the jit algorithm's kernels, which would write about as "
                      f"many partial sums of dW as they read inputs",
        "winograd": _winograd_because(spec, dtype),
        "deep": f"{spec.c_in_g} input channels per group on outputs smaller than "
                f"{WINOGRAD_MIN_SIZE}x{WINOGRAD_MIN_SIZE}: im2col's GEMMs (K = {k}) beat "
                f"the register-tiled gradients",
        "deep_all": f"{spec.c_in_g} input and {spec.c_out_g} output channels per group: "
                    f"im2col's GEMMs (K = {k}) beat the register-tiled kernels" + (
                        " on columns this long with AVX-512"
                        if spec.c_in_g < DEEP_ALL_CHANNELS else ""),
        "implicit": _implicit_because(spec, dtype, op, macs, k),
        "pointwise": f"an unpadded 1x1 kernel at stride 1 with {spec.c_out_g} output "
                     f"channels per group on {spec.oh}x{spec.ow} outputs"
                     + (": im2col's per-sample GEMMs are small"
                        if spec.oh * spec.ow <= IMPLICIT_POINTWISE_MAX_PIXELS
                        else f", {spec.n} samples, {macs:,} multiply-adds in all: a small "
                             "layer")
                     + ", and the jit algorithm runs every pass as "
                     "its implicit GEMM (dX as the correlation of dZ with W's channel axes "
                     "swapped, 17.3.2), never waking BLAS's threads between them",
        "split_weight": f"the weight gradient alone of {spec.n} samples, which im2col splits "
                        f"between {get_num_threads()} threads (each packs its own samples "
                        f"and multiplies them with single-threaded BLAS): faster than the "
                        f"jit algorithm's implicit GEMM",
        "few": f"only {spec.n} sample{'s' if spec.n > 1 else ''} (at most {FEW_SAMPLES}) with "
               f"{spec.c_out_g} output channels per group: im2col's GEMMs (K = {k}) beat "
               f"the register-tiled kernels" + (
                   f" (from {FEW_FORWARD_MIN_CHANNELS} output channels on so few samples)"
                   if op == "forward" else ", whose weight gradient has too little work per "
                   "task"),
        "stem": f"dX and dW together of {spec.c_in_g} input channel"
                f"{'s' if spec.c_in_g > 1 else ''} per group on {spec.oh}x{spec.ow} "
                f"outputs: im2col packs the column matrix (K = {k}) once for both "
                f"gradients, where the register-tiled kernels make two passes",
        "strided_thin": f"dX and dW together of a strided layer with columns of K = {k} "
                        f"and {spec.c_out_g} output channels per group: the jit "
                        f"algorithm's implicit GEMM for dW and dX scattered into the "
                        f"input's stride phases beat im2col's thin GEMMs",
        "split_backward": f"dX and dW of a strided layer with columns of K = {k}: dX on "
                          f"im2col (a GEMM and col2im, nothing packed), dW on the jit "
                          f"algorithm's implicit GEMM "
                          f"({_weight_tile(spec, dtype)} in registers), each "
                          f"faster there than on the other",
        "phases": _phases_because(spec) + (
            "" if op == "grad_input" else "; dW on the jit algorithm's implicit GEMM too"),
        "phases_gemm": _phases_because(spec) + f"; dW on im2col (K = {k})",
        "one_dim": f"a {spec.kh}x{spec.kw} kernel with {spec.c_in_g} input and "
                   f"{spec.c_out_g} output channels per group: im2col's GEMMs (K = {k}) "
                   f"beat the register-tiled kernels on one-dimensional kernels",
        "tiled": _tiled_because(spec, dtype, op, macs),
        "implicit_backward": f"{macs:,} multiply-adds at stride 1: both gradients on the jit "
                             f"algorithm's implicit GEMM (dW with the column matrix read in "
                             f"place, K = {k}; {_ADJOINT})",
        "gemm": f"{macs:,} multiply-adds with GEMMs of K = {k}: im2col + BLAS",
    }[case]
    return Choice(_ALGORITHM[case], reason)


_ADJOINT = ("dX runs as the implicit GEMM: the correlation of dZ, padded by the dilated "
            "kernel's extent less the padding, with W rotated by 180 degrees (17.3.2; finite "
            "weights)")


def _tiled_because(spec: ConvSpec, dtype, op: str, macs: int) -> str:
    """:func:`explain_choice`'s reason for the jit algorithm's unit-stride kernels."""
    return (f"{macs:,} multiply-adds at stride 1 with enough channels per group: the jit "
            f"algorithm's register-tiled kernels (4 channels x 16 pixels in registers) beat "
            f"im2col + BLAS"
            + ("; its dW runs as the implicit GEMM (no junk columns)"
               if op == "backward" and _jit_implicit(spec, dtype) else "")
            + (f"; {_ADJOINT}" if op in ("backward", "grad_input")
               and _jit_adjoint(spec, dtype) else ""))


def _weight_tile(spec: ConvSpec, dtype) -> str:
    """The implicit GEMM's weight-gradient tile, in words."""
    from .algorithms import _implicit

    wco = _implicit.weight_tile_channels(spec.c_out_g)
    return (f"{wco} channels x {_implicit.weight_tile_pairs(wco, np.dtype(dtype).itemsize)} "
            f"(channel, tap) pairs")


def _implicit_because(spec: ConvSpec, dtype, op: str, macs: int, k: int) -> str:
    """The reason of the rule's "implicit" case."""
    from .algorithms import _implicit, jit

    if spec.stride != (1, 1):
        shape = "a strided output"
    elif op == "forward" and spec.dilation != (1, 1):
        shape = "a dilated output"
    elif spec.wp - spec.ow >= jit.IMPLICIT_MIN_JUNK * spec.wp:
        shape = "a narrow output"
    else:
        shape = f"{jit.VECTOR_BYTES * 8}-bit vectors"
    co, px = _implicit.forward_tile(spec.c_out_g)
    tile = (f"{co} channels x {px} pixels in registers" if op == "forward" else
            f"{_weight_tile(spec, dtype)} in registers")
    return (f"{macs:,} multiply-adds, {spec.c_out_g} output channels per group, columns of "
            f"K = {k}, and {shape}: the jit algorithm's implicit GEMM (im2col's product "
            f"with the column matrix read in place, {tile}) beats copying it out for BLAS")


def _phases_because(spec: ConvSpec) -> str:
    """The reason of the rule's "phases" cases."""
    sh, sw = spec.stride
    return (f"dX of a stride-{sh}x{sw} layer with {spec.c_out_g} output channels per "
            f"group: the jit algorithm runs it as unit-stride correlations of dZ, one per "
            f"stride phase of dX ({sh * sw} phases), each with the taps of W that reach it "
            f"(phases no tap reaches are zero; 17.3.2's "
            f"zero insertion without the zeros), on its implicit GEMM; faster than "
            f"im2col's GEMM (K = {spec.c_out_g}) and col2im")


def _winograd_because(spec: ConvSpec, dtype) -> str:
    from .algorithms import winograd

    channels = min(spec.c_in_g, spec.c_out_g)
    if spec.dilation == (1, 1):
        layer = (f"3x3 kernel at stride 1, {channels} channels per group, "
                 f"{spec.oh}x{spec.ow} outputs")
    else:
        dh, dw = spec.dilation
        layer = (f"3x3 kernel at stride 1 and dilation {spec.dilation}, {channels} channels "
                 f"per group: an undilated layer on each of its {dh * dw} phase sub-images "
                 f"({_phase(spec)} outputs)")
    return (f"{layer}, {winograd.gemm_width(spec, dtype):,} tiles per GEMM (enough, by the "
            f"thresholds in npconv.tuning): " + _winograd_reason(spec, dtype))


def _winograd_reason(spec: ConvSpec, dtype) -> str:
    from .algorithms import winograd

    if winograd.tile_size(spec, dtype) == 4:
        return ("Winograd F(4x4, 3x3) (float32 precision 'high') does 1/4 of the "
                "multiply-adds, in 36 GEMMs")
    return "Winograd F(2x2, 3x3) does 4/9 of the multiply-adds, in 16 GEMMs"


def _phase(spec: ConvSpec) -> str:
    from .algorithms import winograd

    return "x".join(map(str, winograd.phase_size(spec)))


def _jit_implicit(spec: ConvSpec, dtype) -> bool:
    from .algorithms import jit

    return jit.implicit(spec, "grad_weight", np.dtype(dtype).itemsize)


def _jit_adjoint(spec: ConvSpec, dtype) -> bool:
    from .algorithms import jit

    return jit.adjoint(spec, np.dtype(dtype).itemsize) is not None


def _small_path(spec: ConvSpec, dtype) -> str:
    """How the jit algorithm runs a small problem, for :func:`explain_choice`."""
    from .algorithms import _dense, jit

    if not jit.indexed(spec):
        return ""
    if _dense.applies(spec, np.dtype(dtype).itemsize):
        return ("; the jit algorithm runs it as one compiled call per pass, on the "
                "convolution written as one dense matrix (npconv.algorithms._dense: "
                f"{spec.c_out_g * spec.oh * spec.ow} x {spec.c_in_g * spec.h * spec.w} per "
                "group, its transpose for dX)")
    return ("; the jit algorithm runs it as one compiled call per pass (im2col through a "
            "cached index table, fused with its GEMM)")


# ------------------------------------------------------------------------------ autotune
OPS = ("forward", "backward", "grad_input", "grad_weight")
CANDIDATES = ("im2col", "jit", "transpose", "winograd")  # naive is the oracle, never fast
_autotune = {"enabled": os.environ.get("NPCONV_AUTOTUNE", "") not in ("", "0"),
             "path": os.environ.get("NPCONV_AUTOTUNE_CACHE") or None, "loaded": False}
_measured_choices: dict[str, Choice] = {}


def set_autotune(enabled: bool = True, cache_file: str | os.PathLike | None = None) -> None:
    """Let ``algorithm="auto"`` measure instead of following the rule.

    Parameters
    ----------
    enabled : bool
        Measure the candidates (:data:`CANDIDATES`) on the first call of every new
        (geometry, dtype, operation, thread count) and keep the fastest.
    cache_file : path, optional
        A JSON file of earlier measurements: read now (if it exists) and rewritten
        atomically after every new measurement, so later processes skip the timing.
    """
    if not isinstance(enabled, bool | np.bool_):
        raise TypeError(f"enabled must be a bool, got {enabled!r}")
    _autotune.update(enabled=bool(enabled), loaded=False,
                     path=None if cache_file is None else os.fspath(cache_file))
    _changed()


def autotune_enabled() -> bool:
    """Whether ``auto`` measures (:func:`set_autotune`)."""
    return _autotune["enabled"]


def _key(spec: ConvSpec, dtype, op: str) -> str:
    fields = ",".join(f"{k}={v}" for k, v in asdict(spec).items())
    return (f"{fields};{np.dtype(dtype).name};{op};threads={get_num_threads()}"
            f";float32_precision={_precision}")


def _load_cache() -> None:
    _autotune["loaded"] = True
    path = _autotune["path"]
    if path is None or not os.path.exists(path):
        return
    try:
        with open(path, encoding="utf-8") as f:
            entries = json.load(f)["choices"]
        choices = {k: Choice(v["algorithm"], v["reason"]) for k, v in entries.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise ValueError(f"autotune cache {path} is not an npconv autotune file: {err}") from err
    _measured_choices.update({k: c for k, c in choices.items() if c.algorithm in CANDIDATES})


def _save_cache() -> None:
    from .fileio import json_text, write_text

    path = _autotune["path"]
    if path is not None:
        write_text(path, json_text({"choices": {k: asdict(c) for k, c in
                                                sorted(_measured_choices.items())}}))


def _time_op(impl, op: str, arrays, spec: ConvSpec, repeat: int,
             give_up: float = float("inf")) -> float:
    """Median seconds of ``op`` after one warm-up call (which also compiles).

    Stops early, returning the time so far, once one run takes longer than ``give_up``.
    """
    from . import algorithms

    x, weight, grad = arrays
    run = {"forward": lambda: impl.forward(x, weight, spec),
           "backward": lambda: algorithms.backward(impl, x, weight, grad, spec, True, True),
           "grad_input": lambda: impl.grad_input(grad, weight, spec),
           "grad_weight": lambda: impl.grad_weight(x, grad, spec)}[op]
    run()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
        if times[-1] > give_up:
            break
    return float(np.median(times))


def _measured(spec: ConvSpec, dtype, op: str) -> Choice:
    """The fastest candidate for this call, measured once per key."""
    if not _autotune["loaded"]:
        _load_cache()
    key = _key(spec, dtype, op)
    if key not in _measured_choices:
        from . import algorithms

        rng = np.random.default_rng(0)
        arrays = tuple(rng.standard_normal(shape).astype(dtype) for shape in
                       (spec.x_shape, spec.weight_shape, spec.y_shape))
        seconds: dict[str, float] = {}
        for name in CANDIDATES:  # a candidate 3x slower than the best gets one run
            impl = algorithms.get(name)
            if algorithms.unsupported(impl, spec) is not None:
                continue
            seconds[name] = _time_op(impl, op, arrays, spec, repeat=3,
                                     give_up=3 * min(seconds.values(), default=np.inf))
        best = min(seconds, key=seconds.get)
        timings = ", ".join(f"{name} {1e3 * t:.3g} ms" for name, t in
                            sorted(seconds.items(), key=lambda item: item[1]))
        _measured_choices[key] = Choice(best, f"measured ({op}, {get_num_threads()} "
                                              f"threads): {timings}")
        _save_cache()
    return _measured_choices[key]


def workspace_limit() -> int:
    """The most bytes im2col allocates for the buffers of one chunk."""
    return _workspace_limit


def set_workspace_limit(nbytes: int) -> None:
    """Bound the buffers im2col allocates per chunk (column matrix, GEMM output, padded
    input) to ``nbytes``; at least one output row is processed at a time.

    Raises
    ------
    ValueError
        If ``nbytes`` is not a positive integer.
    """
    if isinstance(nbytes, bool) or not isinstance(nbytes, int | np.integer) or nbytes < 1:
        raise ValueError(f"workspace limit must be a positive number of bytes, got {nbytes!r}")
    global _workspace_limit
    _workspace_limit = int(nbytes)
    _changed()


_blas_limiter = None


def set_num_threads(n: int) -> None:
    """Use ``n`` threads in Numba's kernels and in the BLAS library (via threadpoolctl)."""
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"number of threads must be a positive integer, got {n!r}")
    import numba
    from threadpoolctl import threadpool_limits

    n = min(int(n), numba.config.NUMBA_NUM_THREADS)
    numba.set_num_threads(n)
    global _blas_limiter
    _blas_limiter = threadpool_limits(limits=n, user_api="blas")
    _changed()


def get_num_threads() -> int:
    """Threads Numba's kernels use now."""
    import numba

    return numba.get_num_threads()


# What ``auto``'s choice (and an algorithm's choice between its paths) may depend on
# besides the call itself: the settings above, counted by _changed() at every change,
# and the thread count. npconv.functional remembers each call's preparation under it.
_generation = 0


def _changed() -> None:
    global _generation
    _generation += 1


def _thread_count():
    """A function returning Numba's thread count now, once its thread pool has started:
    its C accessor where Numba has one (0.07 us a call, against 0.55 for
    ``numba.get_num_threads``, which first makes sure the pool has started), else the
    public one."""
    import numba
    from numba.np.ufunc import parallel

    reader = getattr(parallel, "_get_num_threads", None)
    return reader if callable(reader) else numba.get_num_threads


def settings_key() -> tuple:
    """(setting changes so far, threads now): calls prepared under another key are
    prepared again (:mod:`npconv.functional`). Before Numba's thread pool has started
    (only small problems so far, which run on one thread) the thread count is Numba's
    default, and reading it does not start the pool: a program that forks after small
    convolutions only keeps a child free of GNU OpenMP's fork check."""
    global _threads_now
    if _threads_now is None:
        parallel, config = _numba_threads()
        if not getattr(parallel, "_is_initialized", True):
            return _generation, config.NUMBA_NUM_THREADS
        _threads_now = _thread_count()
    return _generation, _threads_now()


_threads_now = None


@functools.cache
def _numba_threads():
    """(Numba's thread-pool module, its config), imported once: importing them on each
    call took 0.4 us of every small convolution's 3 us before the pool had started."""
    from numba.core import config
    from numba.np.ufunc import parallel

    return parallel, config


if os.environ.get("NPCONV_NUM_THREADS"):
    set_num_threads(int(os.environ["NPCONV_NUM_THREADS"]))
