"""``files``: a result file appears whole or not at all, and the earlier one survives a failed
write; a folder to write into is checked before the work."""

import os
import stat

import pytest

from addershift.sw.files import write_atomically


def test_a_failed_write_leaves_the_earlier_file_and_no_temporary_one(tmp_path):
    out = tmp_path / "m.npz"
    out.write_bytes(b"good")

    def fails(f):
        f.write(b"half")
        raise OSError(28, "No space left on device")
    with pytest.raises(OSError, match="No space left"):
        write_atomically(out, fails)
    assert out.read_bytes() == b"good" and os.listdir(tmp_path) == ["m.npz"]
    write_atomically(out, lambda f: f.write(b"new"))
    assert out.read_bytes() == b"new" and os.listdir(tmp_path) == ["m.npz"]


def test_permissions_kept_or_the_umasks(tmp_path):
    private = tmp_path / "private.npy"
    private.write_bytes(b"x")
    private.chmod(0o600)
    write_atomically(private, lambda f: f.write(b"y"))
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    mask = os.umask(0o022)
    try:
        write_atomically(tmp_path / "new.npy", lambda f: f.write(b"z"))
    finally:
        os.umask(mask)
    assert stat.S_IMODE((tmp_path / "new.npy").stat().st_mode) == 0o644


def test_a_symlink_stays_and_its_target_is_written(tmp_path):
    (tmp_path / "real").mkdir()
    target = tmp_path / "real" / "y.npy"
    target.write_bytes(b"old")
    link = tmp_path / "y.npy"
    link.symlink_to(target)
    write_atomically(link, lambda f: f.write(b"new"))
    assert link.is_symlink() and target.read_bytes() == b"new"


def test_a_device_is_written_in_place_and_errors_name_the_file(tmp_path):
    write_atomically("/dev/null", lambda f: f.write(b"gone"))
    assert os.path.exists("/dev/null") and stat.S_ISCHR(os.stat("/dev/null").st_mode)
    missing = tmp_path / "no" / "m.npz"
    with pytest.raises(FileNotFoundError, match=rf"No such file or directory: '{missing}'"):
        write_atomically(missing, lambda f: f.write(b"x"))


def test_folder_problem_names_the_file_in_the_way(tmp_path):
    from addershift.sw.files import folder_problem
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    assert folder_problem(tmp_path) is None
    assert folder_problem(tmp_path / "new" / "deeper") is None
    assert folder_problem(a_file) == "is a file, not a folder"
    assert folder_problem(a_file / "out") == f"lies under {a_file}, a file, not a folder"
