"""The run-folder module's promises: names, marker, lock, atomic writes, checksums, overwrite."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from icl_kernel.runfolder import (MARKER, RunFolder, RunFolderError, open_existing, safe_name,
                                  strict_json_text)


def tree(path):
    """Snapshot of every file under path: relative name -> bytes."""
    out = {}
    for root, _, files in os.walk(path):
        for f in files:
            p = os.path.join(root, f)
            out[os.path.relpath(p, path)] = open(p, "rb").read()
    return out


@pytest.mark.parametrize("bad", ["", ".", "..", "../x", "/abs", "a/b", "x\0y", " lead", "a\nb"])
def test_safe_name_refuses_non_components(bad):
    with pytest.raises(RunFolderError, match="not a valid run name"):
        safe_name(bad)


def test_safe_name_accepts_plain():
    assert safe_name("demo-1_x.y") == "demo-1_x.y"


def test_create_writes_marker_config_and_checksums(tmp_path):
    with RunFolder.create(tmp_path / "r", command="sweep", config={"a": 1}) as rf:
        rf.savez("cells/seed_0.npz", x=np.arange(3))
        rf.write_json("summary.json", {"v": float("nan"), "w": [1.0, float("inf")]})
    files = tree(tmp_path / "r")
    assert {MARKER, "config.json", "checksums.json", "cells/seed_0.npz", "summary.json"} <= set(files)
    assert json.loads(files["summary.json"]) == {"v": None, "w": [1.0, None]}   # strict JSON
    sums = json.loads(files["checksums.json"])
    assert set(sums) == {"config.json", "cells/seed_0.npz", "summary.json"}
    ro = open_existing(tmp_path / "r", "sweep")
    assert ro.is_done("cells/seed_0.npz")
    assert ro.load_npz("cells/seed_0.npz")["x"].tolist() == [0, 1, 2]


def test_resume_same_config_keeps_files(tmp_path):
    with RunFolder.create(tmp_path / "r", command="sweep", config={"a": 1}) as rf:
        rf.savez("cells/seed_0.npz", x=np.arange(3))
    with RunFolder.create(tmp_path / "r", command="sweep", config={"a": 1}) as rf:
        assert rf.is_done("cells/seed_0.npz")


def test_other_config_refused_and_nothing_changed(tmp_path):
    with RunFolder.create(tmp_path / "r", command="sweep", config={"a": 1}) as rf:
        rf.savez("cells/seed_0.npz", x=np.arange(3))
    before = tree(tmp_path / "r")
    with pytest.raises(RunFolderError, match=r"another config \(differs in a\)"):
        RunFolder.create(tmp_path / "r", command="sweep", config={"a": 2})
    assert tree(tmp_path / "r") == before


def test_other_command_refused(tmp_path):
    RunFolder.create(tmp_path / "r", command="sweep", config={"a": 1}).close()
    with pytest.raises(RunFolderError, match="made by `sweep`"):
        RunFolder.create(tmp_path / "r", command="phenomena", config={"a": 1})
    with pytest.raises(RunFolderError, match="expected a run folder of `llm-check`"):
        open_existing(tmp_path / "r", "llm-check")


def test_overwrite_clears_marked_folder_only(tmp_path):
    with RunFolder.create(tmp_path / "r", command="sweep", config={"a": 1}) as rf:
        rf.savez("cells/seed_0.npz", x=np.arange(3))
    with RunFolder.create(tmp_path / "r", command="sweep", config={"a": 2}, overwrite=True) as rf:
        assert not rf.exists("cells/seed_0.npz")
        assert rf.config() == {"a": 2}


def test_foreign_folder_never_touched_even_with_overwrite(tmp_path):
    d = tmp_path / "mine"
    d.mkdir()
    (d / "thesis.tex").write_text("precious")
    before = tree(d)
    for ow in (False, True):
        with pytest.raises(RunFolderError, match="not an icl-kernel run folder"):
            RunFolder.create(d, command="sweep", config={}, overwrite=ow)
    assert tree(d) == before
    with pytest.raises(RunFolderError, match="no .icl-kernel-run marker"):
        open_existing(d)


def test_corrupted_file_is_not_done_and_named_on_read(tmp_path):
    with RunFolder.create(tmp_path / "r", command="sweep", config={}) as rf:
        rf.savez("cells/seed_0.npz", x=np.arange(3))
        rf.write_json("summary.json", {"a": 1})
    p = tmp_path / "r" / "cells" / "seed_0.npz"
    p.write_bytes(p.read_bytes()[:-7])
    (tmp_path / "r" / "summary.json").write_text("{not json")
    ro = open_existing(tmp_path / "r")
    assert not ro.is_done("cells/seed_0.npz") and ro.is_corrupted("cells/seed_0.npz")
    with pytest.raises(RunFolderError, match=r"seed_0.npz is corrupted"):
        ro.load_npz("cells/seed_0.npz")
    with pytest.raises(RunFolderError, match=r"summary.json is corrupted"):
        ro.read_json("summary.json")


def test_unrecorded_garbage_npz_is_one_line_error(tmp_path):
    RunFolder.create(tmp_path / "r", command="sweep", config={}).close()
    (tmp_path / "r" / "x.npz").write_bytes(b"garbage")
    with pytest.raises(RunFolderError, match="not a readable .npz"):
        open_existing(tmp_path / "r").load_npz("x.npz")


def test_second_writer_refused_by_lock(tmp_path):
    rf = RunFolder.create(tmp_path / "r", command="sweep", config={})
    code = ("import sys; from icl_kernel.runfolder import RunFolder, RunFolderError\n"
            "try:\n    RunFolder.create(sys.argv[1], command='sweep', config={}, overwrite=True)\n"
            "except RunFolderError as e:\n    print(e); sys.exit(3)\n")
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "r")], capture_output=True, text=True)
    assert r.returncode == 3 and "in use by another icl-kernel process" in r.stdout
    rf.close()
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "r")], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_permissions_follow_umask(tmp_path):
    old = os.umask(0o027)
    try:
        with RunFolder.create(tmp_path / "r", command="sweep", config={}) as rf:
            p = rf.write_json("summary.json", {})
        assert (os.stat(p).st_mode & 0o777) == 0o640
    finally:
        os.umask(old)


def test_unwritable_parent_is_one_line_error(tmp_path):
    if os.geteuid() == 0:
        target = "/proc/icl-kernel-test/r"  # even root cannot create folders in /proc
    else:
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o555)
        target = ro / "r"
    with pytest.raises(RunFolderError, match="cannot create|not writable"):
        RunFolder.create(target, command="sweep", config={})


def test_atomic_path_renames_on_success_only(tmp_path):
    with RunFolder.create(tmp_path / "r", command="sweep", config={}) as rf:
        with rf.atomic_path("fig.png") as tmp:
            assert tmp.suffix == ".png"
            tmp.write_bytes(b"png")
        assert rf.is_done("fig.png")
        with pytest.raises(RuntimeError):
            with rf.atomic_path("other.png") as tmp:
                tmp.write_bytes(b"half")
                raise RuntimeError("boom")
    assert sorted(os.listdir(tmp_path / "r")) == sorted([".icl-kernel-run", ".lock", "checksums.json",
                                                          "config.json", "fig.png"])


def test_strict_json_text_has_no_bare_nan():
    text = strict_json_text({"a": math.nan, "b": np.float32(np.inf), "c": np.arange(2)})
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"a": None, "b": None, "c": [0, 1]}
