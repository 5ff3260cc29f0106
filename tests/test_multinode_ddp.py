"""Two-node DDP on this machine: two real processes of the real command, started as a user starts
one on each of two machines (``trainer=multinode``, MASTER_ADDR/MASTER_PORT/NODE_RANK), one CPU
device each over gloo. Both ranks train on disjoint shards, end with identical weights, and one
summary, one set of checkpoints and one TensorBoard log come out."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch
from conftest import ROOT, read_summary, train_env
from test_ddp import TESTS_DIR, ShardRecorder

VAL_SIZE = 54_000  # a 6,000-image training split


class WeightsRecorder(ShardRecorder):
    """ShardRecorder, and a digest of the rank's weights when training ends."""

    def on_train_end(self, trainer, pl_module):
        digest = hashlib.sha256()
        for name, tensor in sorted(pl_module.state_dict().items()):
            digest.update(name.encode() + tensor.detach().cpu().contiguous().numpy().tobytes())
        self.out_dir.mkdir(parents=True, exist_ok=True)
        (self.out_dir / f"weights_rank{trainer.global_rank}.json").write_text(
            json.dumps({"sha256": digest.hexdigest(), "steps": trainer.global_step}))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_nodes_train_disjoint_shards_to_the_same_weights(tmp_path, mnist_dir):
    record_dir, run_dir, port = tmp_path / "record", tmp_path / "run", free_port()
    command = [sys.executable, "-m", "cnn_lightning.train", "trainer=multinode", "trainer.num_nodes=2",
               "trainer.devices=1", "trainer.accelerator=cpu",
               "trainer.max_epochs=1", "trainer.limit_train_batches=5", "trainer.limit_val_batches=2",
               "trainer.limit_test_batches=2", "trainer.num_sanity_val_steps=0", f"data.val_size={VAL_SIZE}",
               "~callbacks.progress_bar", "+callbacks.recorder._target_=test_multinode_ddp.WeightsRecorder",
               f"+callbacks.recorder.out_dir={record_dir}", f"hydra.run.dir={run_dir}"]
    pythonpath = os.pathsep.join(filter(None, [str(TESTS_DIR), os.environ.get("PYTHONPATH")]))
    nodes = [subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=dict(train_env(), PYTHONPATH=pythonpath, MASTER_ADDR="127.0.0.1",
                                       MASTER_PORT=str(port), NODE_RANK=str(rank), WORLD_SIZE="2"))
             for rank in (0, 1)]
    outs = [node.communicate(timeout=400) for node in nodes]
    for node, (out, err) in zip(nodes, outs, strict=True):
        assert node.returncode == 0, out[-2000:] + err[-3000:]
    assert "deprecated" not in (outs[1][0] + outs[1][1]).lower(), outs[1][1][-3000:]  # rank 1 says nothing of it

    fit = [json.loads((record_dir / f"fit_rank{r}.json").read_text()) for r in (0, 1)]
    for rank, record in enumerate(fit):
        assert record["rank"] == rank and record["world_size"] == 2 and record["backend"] == "gloo"
    assert fit[0]["pid"] != fit[1]["pid"]
    shards = [r["drawn"]["train"] for r in fit]
    assert len(shards[0]) == len(shards[1]) > 0 and set(shards[0]).isdisjoint(shards[1])
    weights = [json.loads((record_dir / f"weights_rank{r}.json").read_text()) for r in (0, 1)]
    assert weights[0] == weights[1] and weights[0]["steps"] == 5

    # one summary, one set of checkpoints, one TensorBoard log, all rank 0's
    assert [p.relative_to(tmp_path) for p in tmp_path.rglob("summary.json")] == [Path("run/summary.json")]
    summary = read_summary(run_dir)
    assert summary["epochs"] == 1 and summary["global_steps"] == 5
    checkpoints = sorted(p.name for p in tmp_path.rglob("*.ckpt"))
    assert len(checkpoints) == 2 and "last.ckpt" in checkpoints, checkpoints
    events = list(tmp_path.rglob("events.out.tfevents.*"))  # fit's and test's, in one log folder, by rank 0
    assert {e.parent for e in events} == {run_dir / "tensorboard"}, events
    assert {e.name.split(".")[-2] for e in events} == {str(fit[0]["pid"])}, events
    # and the checkpoint holds the weights both ranks ended with
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    digest = hashlib.sha256()
    for name, tensor in sorted(state.items()):
        digest.update(name.encode() + tensor.contiguous().numpy().tobytes())
    assert digest.hexdigest() == weights[0]["sha256"]
