"""gate.core.fsutil's reads: nothing but a regular file is opened, within its size
limit. (StagedDir and atomic writes: tests/adversarial/test_outputs.py.)"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from gate.core.fsutil import NotRegularFile, TooLarge, describe_file_kind, open_regular, read_regular


def test_describe_file_kind__none_for_a_file_and_words_for_the_rest(tmp_path):
    (tmp_path / "f").write_text("x")
    os.mkfifo(tmp_path / "fifo")
    assert describe_file_kind(os.stat(tmp_path / "f").st_mode) is None
    assert describe_file_kind(os.stat(tmp_path).st_mode) == "a folder"
    assert describe_file_kind(os.stat(tmp_path / "fifo").st_mode) == "a FIFO (named pipe)"
    assert describe_file_kind(os.stat("/dev/null").st_mode) == "a character device"


@pytest.mark.parametrize("append", [False, True])
def test_open_regular__fifo_and_device_are_refused_without_blocking(tmp_path, append):
    os.mkfifo(tmp_path / "fifo")  # refused from its stat: never opened, so this cannot hang
    with pytest.raises(NotRegularFile, match=r"^is a FIFO \(named pipe\), not a regular file$") as info:
        open_regular(tmp_path / "fifo", append=append)
    assert info.value.kind == "a FIFO (named pipe)"
    with pytest.raises(NotRegularFile, match="^is a character device, not a regular file$"):
        open_regular(Path("/dev/zero"), 10, append=append)


def test_open_regular__folder_missing_and_nul_raise_as_open_would(tmp_path):
    with pytest.raises(IsADirectoryError):
        open_regular(tmp_path)
    with pytest.raises(FileNotFoundError):
        open_regular(tmp_path / "nope")
    with pytest.raises(ValueError):
        open_regular(Path("a\0b"))


def test_open_regular__append_creates_the_file_and_writes_unbuffered(tmp_path):
    with open_regular(tmp_path / "out", append=True) as fh:
        fh.write(b"a\n")
        assert (tmp_path / "out").read_bytes() == b"a\n"
    with open_regular(tmp_path / "out", append=True) as fh:
        fh.write(b"b\n")
    assert (tmp_path / "out").read_bytes() == b"a\nb\n"


def test_read_regular__reads_up_to_the_limit_and_refuses_one_byte_more(tmp_path):
    limit = 1 << 20
    (tmp_path / "f").write_bytes(b"x" * limit)
    assert len(read_regular(tmp_path / "f", limit)) == limit
    (tmp_path / "f").write_bytes(b"x" * (limit + 1))
    with pytest.raises(TooLarge, match=r"^is 1,048,577 bytes, over the 1 MiB limit$"):
        read_regular(tmp_path / "f", limit)
