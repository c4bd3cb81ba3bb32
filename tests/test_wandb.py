"""wandb shows the experiment: the offline run of a default run holds the whole config, the
final numbers of results.json and the figures; a sweep's table goes to wandb as a Table."""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path

import pytest

from ot_experiments.tables import main as tables_main

from .conftest import FAST, read_results, run_folders, train

pb = pytest.importorskip("wandb.proto.wandb_internal_pb2")
BLOCK = 32768  # the .wandb file is a LevelDB-style log of protobuf records in 32 KiB blocks


def records(path: Path):
    """The protobuf records of an offline run's ``run-<id>.wandb`` file."""
    raw = path.read_bytes()
    pos, buf = 7, b""  # 7-byte header: ":W&B", magic, version
    while pos + 7 <= len(raw):
        if BLOCK - pos % BLOCK < 7:  # block trailer: zero padding
            pos += BLOCK - pos % BLOCK
            continue
        _crc, length, kind = struct.unpack("<IHB", raw[pos : pos + 7])
        buf += raw[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last piece of one
            record = pb.Record()
            record.ParseFromString(buf)
            buf = b""
            yield record


def read_offline_run(folder: Path) -> tuple[dict, dict, set]:
    """(config, summary, history keys) of the wandb offline run under ``folder``."""
    (path,) = folder.glob("wandb/offline-run-*/run-*.wandb")
    config, summary, history = {}, {}, set()
    for r in records(path):
        kind = r.WhichOneof("record_type")
        if kind == "config":
            config.update({i.key: json.loads(i.value_json) for i in r.config.update})
        elif kind == "summary":
            summary.update({i.key: json.loads(i.value_json) for i in r.summary.update if i.key})
        elif kind == "history":
            history |= {i.key or "/".join(i.nested_key) for i in r.history.item}
    return config, summary, history


def test_the_wandb_run_holds_config_summary_and_figures(tmp_path):
    train(tmp_path, *[o for o in FAST if o != "logger=csv"], "logger=default", "d=3")
    (folder,) = run_folders(tmp_path)
    res = read_results(folder)
    config, summary, history = read_offline_run(folder)
    assert config["d"] == 3 and config["method.mmd_weight"] == 100
    assert config["problem.preset"] == "ncf_benchmark" and config["trainer.max_steps"] == 6
    assert summary["status"] == "ok"
    assert summary["final/uvp_fwd"] == pytest.approx(res["metrics"]["uvp_fwd"])
    assert summary["baseline/pot_emd/w2_sq"] == pytest.approx(res["baselines"]["pot_emd"]["w2_sq"])
    assert "timing/step_ms" in summary
    pngs = sorted(p.stem for p in folder.glob("*.png"))
    assert "training_curves" in pngs and {f"figures/{p}/path" for p in pngs} <= history
    assert list(folder.glob("wandb/offline-run-*/files/ot_results.json"))

    tables_main([str(tmp_path), "--wandb"])
    (table_run,) = (tmp_path / "wandb").glob("offline-run-*/run-*.wandb")
    for _ in range(100):  # wandb's service may still be writing the file
        kinds = [r.WhichOneof("record_type") for r in records(table_run)]
        if "exit" in kinds:
            break
        time.sleep(0.2)
    keys = {i.key or "/".join(i.nested_key) for r in records(table_run) for i in r.history.item}
    assert "table/_type" in keys
