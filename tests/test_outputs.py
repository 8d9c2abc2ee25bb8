"""Outputs are never written or deleted through a link, never half-written, and two runs cannot both win one.

Issue 19, parts 2, 3 and 5: `--overwrite` through a symlink deleted the link's target; two runs on one
output both reported success; output folders ignored the umask; killed runs left staging folders behind.
"""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from kstruct.outputs import OutputExistsError, OutputPathError, check_can_write, write_directory, write_file


def _fill(folder: Path) -> None:
    (folder / "model.tflite").write_bytes(b"new")


@pytest.fixture
def elsewhere(tmp_path):
    """A folder holding precious.txt, outside the output's folder."""
    folder = tmp_path / "elsewhere" / "dir"
    folder.mkdir(parents=True)
    (folder / "precious.txt").write_text("keep me")
    return folder


def test_a_link_to_a_directory_is_refused_even_with_overwrite_and_its_target_is_untouched(tmp_path, elsewhere):
    link = tmp_path / "out"
    link.symlink_to(elsewhere)
    for overwrite in (False, True):
        with pytest.raises(OutputPathError, match=r"is a symbolic link \(to .*elsewhere/dir\); kstruct never writes"):
            write_directory(link, _fill, overwrite=overwrite)
    assert sorted(p.name for p in elsewhere.iterdir()) == ["precious.txt"]
    assert (elsewhere / "precious.txt").read_text() == "keep me"
    assert link.is_symlink()


def test_a_link_to_a_file_and_a_dangling_link_are_refused_and_nothing_is_created(tmp_path, elsewhere):
    file_link = tmp_path / "to_file"
    file_link.symlink_to(elsewhere / "precious.txt")
    with pytest.raises(OutputPathError, match="is a symbolic link"):
        write_directory(file_link, _fill, overwrite=True)
    assert (elsewhere / "precious.txt").read_text() == "keep me"
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "missing" / "parents" / "out")
    with pytest.raises(OutputPathError, match=r"which does not exist\); kstruct never writes"):
        write_directory(dangling, _fill, overwrite=True)
    assert not (tmp_path / "missing").exists()
    with pytest.raises(OutputPathError, match="is a symbolic link"):
        write_file(file_link, b"x", overwrite=True)
    assert (elsewhere / "precious.txt").read_text() == "keep me"


def test_a_file_where_the_output_directory_goes_is_refused_even_with_overwrite(tmp_path):
    target = tmp_path / "out"
    target.write_text("mine")
    with pytest.raises(OutputPathError, match="is a file, but the output is a directory"):
        write_directory(target, _fill, overwrite=True)
    assert target.read_text() == "mine"


def test_overwriting_the_current_directory_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "work.py").write_text("mine")
    with pytest.raises(OutputPathError, match="holds the current directory"):
        check_can_write(".", overwrite=True)
    assert (tmp_path / "work.py").read_text() == "mine"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through directory permissions")
def test_an_unwritable_output_folder_is_found_before_any_work(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(OutputPathError, match=r"Cannot write the output in .*locked \(Permission denied\)"):
            check_can_write(locked / "out", overwrite=False)
    finally:
        locked.chmod(0o700)


def test_a_read_only_mount_is_found_before_any_work():
    """/proc is mounted without write access for everyone, root included."""
    with pytest.raises(OutputPathError, match=r"Cannot write the output in /proc"):
        check_can_write("/proc/kstruct-out", overwrite=False)


def test_outputs_honour_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        folder = write_directory(tmp_path / "out", _fill)
        single = write_file(tmp_path / "model.tflite", b"x")
    finally:
        os.umask(old)
    assert folder.stat().st_mode & 0o777 == 0o750
    assert single.stat().st_mode & 0o777 == 0o640


def test_staging_folders_of_killed_runs_are_removed_by_the_next_run(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".out.kstruct-staging-{dead.stdout.strip()}-abc123"
    stale.mkdir()
    (stale / "model.keras").write_bytes(b"half")
    mine = tmp_path / f".out.kstruct-staging-{os.getpid()}-live"  # a live run's: kept
    mine.mkdir()
    write_directory(tmp_path / "out", _fill)
    assert not stale.exists() and mine.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [mine.name, "out"]


RACER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from kstruct.outputs import OutputExistsError, write_directory

    out, barrier, name, overwrite = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4] == "1"

    def fill(folder):
        (folder / "who.txt").write_text(name)
        (barrier / name).touch()  # past the first check; wait until the other racer is too
        deadline = time.monotonic() + 60
        while len(list(barrier.iterdir())) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)

    try:
        write_directory(out, fill, overwrite=overwrite)
    except OutputExistsError as err:
        print(err)
        sys.exit(2)
    """
)


@pytest.mark.parametrize("overwrite", [False, True], ids=["no-overwrite", "overwrite"])
def test_of_two_processes_racing_for_one_output_exactly_one_wins(tmp_path, overwrite):
    out, barrier = tmp_path / "same", tmp_path / "barrier"
    barrier.mkdir()
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, str(out), str(barrier), name, str(int(overwrite))],
            stdout=subprocess.PIPE, text=True, env=env,
        )
        for name in ("a", "b")
    ]
    outcomes = [(racer.wait(timeout=120), racer.stdout.read()) for racer in racers]
    codes = sorted(code for code, _ in outcomes)
    if overwrite:  # both replace whole: the output is one run's, complete
        assert codes == [0, 0]
    else:
        assert codes == [0, 2], outcomes
        loser = next(text for code, text in outcomes if code == 2)
        assert f"Output {out} already exists; pass overwrite=True to replace it" in loser
    assert (out / "who.txt").read_text() in ("a", "b")
    assert sorted(p.name for p in out.iterdir()) == ["who.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["barrier", "same"]  # no staging or retired folder left


def test_write_file_without_overwrite_never_replaces_a_file_that_appeared(tmp_path):
    target = tmp_path / "model.tflite"
    write_file(target, b"first")
    with pytest.raises(OutputExistsError, match="pass overwrite=True"):
        write_file(target, b"second")
    assert target.read_bytes() == b"first"
    write_file(target, b"second", overwrite=True)
    assert target.read_bytes() == b"second"


@pytest.mark.slow
def test_two_kstruct_optimize_runs_started_together_on_one_out_one_wins_and_the_other_names_the_flag(tmp_path):
    import keras
    import numpy as np

    from tests.console import spawn

    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(3, activation="softmax")])
    model.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.save(tmp_path / "model.keras")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "data.npz", x=rng.random((64, 8), dtype=np.float32), y=rng.integers(0, 3, 64))
    out = tmp_path / "same"
    command = ["kstruct", "optimize", str(tmp_path / "model.keras"), "--strategy", "prune(0.5)", "--data",
               str(tmp_path / "data.npz"), "--target", "float32", "--epochs", "1", "--out", str(out)]
    runs = [spawn(command) for _ in range(2)]
    outcomes = [(run.wait(timeout=300), *run.communicate()) for run in runs]
    assert sorted(code for code, _, _ in outcomes) == [0, 2], outcomes
    loser = next(stderr for code, _, stderr in outcomes if code == 2).strip()
    assert loser == f"kstruct: error: Output {out} already exists; pass --overwrite to replace it, or choose another path."
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["layers.png", "model.keras", "model.tflite", "report.json", "report.md", "stages.png", "training.png"]
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.npz", "model.keras", "same"]
