"""The shapes target: the default ``npconv train`` run reaches 98% test accuracy.

Accuracy only: how long it takes is recorded in docs/training.md, never asserted.
"""

from __future__ import annotations

import pytest

from npconv.nn.train import TrainConfig, Trainer


@pytest.mark.slow
def test_default_shapes_run_reaches_98_percent():
    trainer = Trainer(TrainConfig.for_model("book"))  # shapes, 10 epochs, seed 0
    assert trainer.fit()
    final = trainer.history["epochs"][-1]["test_acc"]
    assert final >= 0.98, f"test accuracy {final:.2%} after 10 epochs"
