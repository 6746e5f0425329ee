"""The cluster key file: made by `new_cluster_key`, read by `load_cluster_key`."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from pyproglog.discovery import ClusterKeyError, load_cluster_key, new_cluster_key


def test_a_new_key_round_trips(tmp_path: Path) -> None:
    text = new_cluster_key()
    assert len(base64.b64decode(text)) == 32
    assert new_cluster_key() != text
    path = tmp_path / "cluster.key"
    path.write_text(f"  {text}\n")  # whitespace and a final newline are fine
    assert load_cluster_key(path) == base64.b64decode(text)


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"", "empty"),
        (b"not base64!!\n", "not base64"),
        (base64.b64encode(b"x" * 16), "16 bytes, it must be 32"),
        (b"\xff\xfe", "not base64"),
    ],
)
def test_bad_files_are_named_with_the_flag(tmp_path: Path, content: bytes, says: str) -> None:
    path = tmp_path / "cluster.key"
    path.write_bytes(content)
    with pytest.raises(ClusterKeyError) as exc:
        load_cluster_key(path)
    assert str(exc.value).startswith(f"--cluster-key-file {path}: ")
    assert says in str(exc.value)


def test_missing_file_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(ClusterKeyError, match=r"no such file.*proglog certs cluster-key"):
        load_cluster_key(tmp_path / "nope.key")
    with pytest.raises(ClusterKeyError, match="is a directory"):
        load_cluster_key(tmp_path)
