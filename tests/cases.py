"""The curated convolution cases every algorithm is tested on (readable ids)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Case:
    id: str
    x: tuple
    w: tuple
    kwargs: dict = field(default_factory=dict)


CASES = [
    Case("book", (8, 3, 7, 6), (2, 3, 4, 5)),
    Case("1x1", (2, 4, 5, 5), (3, 4, 1, 1)),
    Case("1x1-stride2", (2, 4, 5, 6), (3, 4, 1, 1), dict(stride=2)),
    Case("kernel-equals-padded-input", (2, 2, 4, 5), (3, 2, 6, 7), dict(padding=1)),
    Case("stride-remainder", (2, 3, 9, 8), (4, 3, 3, 2), dict(stride=(2, 3))),
    Case("stride-larger-than-kernel", (2, 2, 10, 9), (3, 2, 2, 2), dict(stride=(4, 3))),
    Case("h-ne-w", (2, 2, 5, 11), (3, 2, 3, 4)),
    Case("n1", (1, 3, 6, 6), (2, 3, 3, 3)),
    Case("c1", (3, 1, 6, 6), (1, 1, 3, 3)),
    Case("groups", (2, 6, 7, 7), (4, 3, 3, 3), dict(groups=2)),
    Case("depthwise", (2, 4, 7, 6), (4, 1, 3, 3), dict(groups=4, padding=1)),
    Case("depthwise-multiplier", (2, 3, 6, 6), (6, 1, 3, 3), dict(groups=3)),
    Case("dilation", (2, 3, 9, 10), (2, 3, 3, 3), dict(dilation=(2, 3))),
    Case("pad-int", (2, 2, 5, 5), (3, 2, 3, 3), dict(padding=2)),
    Case("pad-pair", (2, 2, 5, 6), (3, 2, 3, 3), dict(padding=(1, 2))),
    Case("pad-explicit", (2, 2, 5, 6), (3, 2, 3, 3), dict(padding=((0, 2), (3, 1)))),
    Case("pad-4tuple", (2, 2, 5, 6), (3, 2, 2, 3), dict(padding=(1, 0, 0, 2), stride=2)),
    Case("valid", (2, 2, 6, 5), (3, 2, 3, 3), dict(padding="valid")),
    Case("same", (2, 2, 6, 5), (3, 2, 3, 3), dict(padding="same")),
    Case("same-even-kernel", (2, 2, 6, 5), (3, 2, 4, 2), dict(padding="same")),
    Case("same-dilated", (2, 2, 7, 6), (3, 2, 3, 2), dict(padding="same", dilation=(2, 3))),
    Case("same-stride2", (2, 2, 7, 8), (3, 2, 3, 3), dict(padding="same", stride=2)),
    Case("reflect", (2, 2, 6, 5), (3, 2, 3, 3), dict(padding=(2, 1), padding_mode="reflect")),
    Case("replicate", (2, 2, 6, 5), (3, 2, 3, 3),
         dict(padding=(2, 3), padding_mode="replicate")),
    Case("circular", (2, 2, 6, 5), (3, 2, 3, 3), dict(padding=(2, 1), padding_mode="circular")),
    Case("circular-full-wrap", (1, 2, 4, 3), (2, 2, 3, 3),
         dict(padding=(4, 3), padding_mode="circular")),
    Case("reflect-same-stride2", (2, 2, 7, 6), (3, 2, 4, 3),
         dict(padding="same", stride=2, padding_mode="reflect")),
    Case("replicate-explicit", (2, 2, 5, 6), (3, 2, 3, 3),
         dict(padding=((0, 3), (2, 1)), padding_mode="replicate")),
    Case("everything", (2, 4, 11, 10), (6, 2, 3, 2),
         dict(stride=(2, 3), padding=(1, 2), dilation=(2, 1), groups=2,
              padding_mode="reflect")),
]
