"""The reference test vectors in tests/fixtures/official are complete and unaltered."""

from __future__ import annotations

import hashlib
import json

import pytest

from conftest import OFFICIAL


def _manifest() -> list[dict]:
    return json.loads((OFFICIAL / "MANIFEST.json").read_text())["files"]


@pytest.mark.parametrize("entry", _manifest(), ids=lambda e: e["path"])
def test_every_fixture_file_matches_the_manifest(entry):
    path = OFFICIAL / entry["path"]
    assert path.is_file(), f"{path} is missing from the checkout"
    data = path.read_bytes()
    assert len(data) == entry["bytes"], f"{path}: size changed (a git LFS pointer or CRLF?)"
    assert hashlib.sha256(data).hexdigest() == entry["sha256"], f"{path}: content changed"
