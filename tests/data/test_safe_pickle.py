"""The restricted unpickler: reads the reference's pickles, refuses code execution."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from recon_lightning.data.safe_pickle import atomic_pickle_dump, safe_load_file, safe_loads


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_reads_reference_structures_at_every_protocol(protocol: int) -> None:
    obj = {
        "dat": [[np.arange(12, dtype=np.float32).reshape(2, 6)], [np.array([3], dtype=np.int32)]],
        "episode": [(np.ones((4, 6), np.float32), 1, np.int32(17))],
        "numbers": (1, 2.5, True, None, "text", b"bytes"),
    }
    out = safe_loads(pickle.dumps(obj, protocol=protocol))
    np.testing.assert_array_equal(out["dat"][0][0], obj["dat"][0][0])
    assert out["dat"][1][0].dtype == np.int32
    assert int(out["episode"][0][2]) == 17
    assert out["numbers"] == obj["numbers"]


@pytest.mark.parametrize("kind", ["system", "exec"])
def test_refuses_code_execution(tmp_path: Path, exploit_pickle, kind: str) -> None:
    sentinel = tmp_path / "pwned"
    data = exploit_pickle(sentinel, kind, wrap="none")
    # Sanity: the payload really is live (a plain pickle.loads would run it); we only check the
    # opcode stream names the callable, never execute it.
    assert (b"system" if kind == "system" else b"exec") in data
    with pytest.raises(pickle.UnpicklingError, match="refused"):
        safe_loads(data)
    assert not sentinel.exists()


def test_refuses_arbitrary_classes() -> None:
    data = pickle.dumps(Path("x"))
    with pytest.raises(pickle.UnpicklingError, match="pathlib"):
        safe_loads(data)


def test_atomic_dump_roundtrip_and_no_leftovers(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "cache.dat"
    atomic_pickle_dump([[np.zeros((2, 6), np.float32)], [np.array([1], np.int32)]], path)
    loaded = safe_load_file(path)
    assert loaded[0][0].shape == (2, 6)
    # Readable by a plain pickle.load too (the reference's reader).
    with open(path, "rb") as fh:
        assert pickle.load(fh)[1][0].dtype == np.int32
    assert [p.name for p in path.parent.iterdir()] == ["cache.dat"]


def test_atomic_dump_failure_leaves_nothing(tmp_path: Path) -> None:
    path = tmp_path / "cache.dat"
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
        atomic_pickle_dump([lambda: 0], path)
    assert list(tmp_path.iterdir()) == []
