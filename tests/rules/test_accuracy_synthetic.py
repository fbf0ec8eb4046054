"""The rules against the synthetic small school's ground truth (bench/accuracy.py's scoring)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "accuracy.py"


def _accuracy() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_accuracy", BENCH)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("seed", [1, 2])
def test_small_school_recall_and_precision(seed: int) -> None:
    result = _accuracy().evaluate("small", seed)
    assert result.true_positive > 0
    assert result.missed == []
    assert result.false_alarms == []
    assert result.wrong_severity == []
