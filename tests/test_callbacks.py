"""The ``callbacks`` config group: callbacks chosen from the command line."""

from .conftest import FAST, read_results, run_folders, train


def test_lr_monitor_added_from_the_command_line(tmp_path):
    train(tmp_path, *FAST, "callbacks=[default,lr_monitor]", "threads=1")
    (folder,) = run_folders(tmp_path)
    header = (folder / "metrics.csv").read_text().splitlines()[0]
    assert "lr-Adam" in header
    assert (folder / "checkpoints" / "last.ckpt").exists()


def test_no_optional_callbacks_still_gives_a_run(tmp_path):
    train(tmp_path, *FAST, "callbacks=none", "threads=1", "+callbacks.lr_monitor=null")
    (folder,) = run_folders(tmp_path)
    assert read_results(folder)["status"] == "ok"
    assert (folder / "checkpoints" / "last.ckpt").exists()  # the final checkpoint
