"""The rules against the synthetic schools' ground truth (bench/accuracy.py's scoring).

small: every violation planted beside routine near misses; quiet: the same school keeping its
policy; medium (ten days, to keep CI quick): a secondary school's volume. Each must score
recall 100%, precision 100%, 0 false alarms per 1,000 routine messages, the planted severity and
actor, and every info note.
"""

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


@pytest.mark.parametrize(("size", "seed", "days"), [("small", 1, 30), ("small", 2, 30),
                                                     ("quiet", 1, 30), ("medium", 1, 10)])
def test_recall_precision_and_false_alarms(size: str, seed: int, days: int) -> None:
    result = _accuracy().evaluate(size, seed, history_days=days)
    assert (result.true_positive > 0) == (size != "quiet")
    assert result.routine_messages > 1000
    assert result.missed == []
    assert result.false_alarms == []
    assert result.false_alarms_per_1000 == 0
    assert result.wrong_severity == []
    assert result.wrong_actor == []
    assert result.missing_info == []


def test_a_false_alarm_is_counted_per_1000_routine_messages() -> None:
    """The scorer itself: an unlabelled finding counts against precision and the rate."""
    accuracy = _accuracy()
    score = accuracy.Score(true_positive=9, routine_messages=2000, false_alarms=["x"])
    assert score.precision == 0.9
    assert score.false_alarms_per_1000 == 0.5
