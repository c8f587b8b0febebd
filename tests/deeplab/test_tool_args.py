import os
from pathlib import Path

import pytest

from deeplab.errors import UserError
from deeplab.tool_args import check_new_files, check_ranges, check_writable


def test_check_ranges_names_the_flag_and_passes_defaults() -> None:
    check_ranges({"--rounds": 1, "--workers": 0, "--scale": 0.5, "--size": None},
                 at_least_one=["--rounds", "--size"], at_least_zero=["--workers"], above_zero=["--scale"])
    for values, rule in (({"--rounds": 0}, "at least 1"), ({"--rounds": float("nan")}, "at least 1"),
                         ({"--workers": -1}, "0 or more"), ({"--scale": 0.0}, "above 0"),
                         ({"--scale": float("inf")}, "above 0")):
        flag, value = next(iter(values.items()))
        rules = {"at least 1": "at_least_one", "0 or more": "at_least_zero", "above 0": "above_zero"}
        with pytest.raises(UserError, match=f"^{flag}: must be {rule}, got {value}$"):
            check_ranges(values, **{rules[rule]: [flag]})


def test_check_writable_rejects_a_path_under_a_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="cannot write to the output folder"):
        check_writable(tmp_path / "file" / "out")
    assert check_writable(tmp_path / "new" / "out").is_dir()
    for create in (True, False):
        with pytest.raises(UserError, match=r"cannot write to the output folder \(it is a file\)$"):
            check_writable(tmp_path / "file", create=create)
    check_writable(tmp_path / "later" / "out", create=False)
    assert not (tmp_path / "later").exists()  # a check before loading creates nothing


def test_check_new_files_keeps_what_exists_unless_asked(tmp_path: Path) -> None:
    kept = tmp_path / "scores.json"
    kept.write_text("mine")
    with pytest.raises(UserError, match=f"^{kept}: exists and this run did not write it; choose another --json"):
        check_new_files([tmp_path / "new.json", kept], flag="--json")
    check_new_files([kept], flag="--json", overwrite=True)
    assert kept.read_text() == "mine"  # a check only: nothing is written or removed
    with pytest.raises(UserError, match="is a folder; --json names the file"):
        check_new_files([tmp_path], flag="--json", overwrite=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="cannot write to the output folder"):
        check_new_files([tmp_path / "file" / "r.json"], flag="--json")
    check_new_files([tmp_path / "sub" / "deeper" / "r.json"], flag="--json")
    with pytest.raises(UserError, match="names a folder \\(it ends in '/'\\); --json names the file"):
        check_new_files([f"{tmp_path / 'reports'}/"], flag="--json")
    assert not (tmp_path / "sub").exists()  # a check creates nothing; the writer makes the folder


def test_check_new_files_names_the_first_existing_file_and_how_many(tmp_path: Path) -> None:
    paths = [tmp_path / f"{name}.png" for name in "abcd"]
    for path in paths[1:]:
        path.write_text("theirs")
    with pytest.raises(UserError, match=f"^{paths[1]}: exists and this run did not write it \\(and 2 more\\); "):
        check_new_files(paths, flag="--data-root")


def test_check_new_files_writes_through_devices_and_pipes_but_never_over_an_input(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe")
    check_new_files([Path(os.devnull), tmp_path / "pipe"], flag="--json")  # nothing in them to lose
    source = tmp_path / "best.pt"
    source.write_text("weights")
    (tmp_path / "link.json").symlink_to(source)
    for out in (source, tmp_path / "link.json"):
        with pytest.raises(UserError, match=f"^{out}: is the --checkpoint file; --json names a new file"):
            check_new_files([out], flag="--json", overwrite=True, inputs=[("--checkpoint", source)])
