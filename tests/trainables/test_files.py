import pytest

from trainables.files import replacing, write_text


def test_a_write_that_fails_leaves_the_old_file_whole_and_no_temporary_file(tmp_path):
    path = tmp_path / "deep" / "record.json"
    write_text(path, "old")
    with pytest.raises(OSError), replacing(path) as tmp:
        tmp.write_text("half")
        raise OSError(28, "No space left on device")
    assert path.read_text() == "old" and [p.name for p in path.parent.iterdir()] == [path.name]
    write_text(path, "new")
    assert path.read_text() == "new" and len(list(path.parent.iterdir())) == 1
