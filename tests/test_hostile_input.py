"""Hostile and careless input at every entry point: one clear line, a non-zero exit, nothing lost.

The table runs each entry point in this process, the way its command line does (Hydra's
``main`` with the arguments, the app's ``main(argv)``), because compose-time validation refuses
before any data is read or model built; a few cases run as real subprocesses to show the exit
status and the single line on stderr. The fuzz sends 200+ seeded mutations of one real
checkpoint through ``load_model`` and the app's loader.
"""

from __future__ import annotations

import io
import json
import logging
import os
import pickle
import random
import re
import resource
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
import yaml
from conftest import ROOT, read_summary, train_env
from PIL import Image

import gui.__main__ as gui_cli
from cnn_lightning import evaluate, export, predict, summary, train
from cnn_lightning.checkpoints import CheckpointError, load_model
from cnn_lightning.inference import Predictor
from cnn_lightning.mnist_files import raw_dir


def snapshot(*roots: Path) -> dict[str, tuple[int, int]]:
    """(size, mtime) of every file under ``roots``: what must be the same after a refusal."""
    files = {}
    for root in roots:
        for path in [root] if root.is_file() else root.rglob("*"):
            if path.is_file():
                stat = path.stat()
                files[str(path)] = (stat.st_size, stat.st_mtime_ns)
    return files


@pytest.fixture(scope="module")
def files(tmp_path_factory, trained_run, digit_png) -> dict[str, Path]:
    """Bad files of every kind, beside the real checkpoint of ``trained_run``."""
    root = tmp_path_factory.mktemp("hostile")
    good = Path(read_summary(trained_run)["best_checkpoint"])
    made = {"good": good, "missing": root / "missing.ckpt", "dir": root, "png": digit_png}
    (made.setdefault("text", root / "notes.ckpt")).write_text("these are my notes, not a checkpoint\n")
    (made.setdefault("empty", root / "empty.ckpt")).write_bytes(b"")
    (made.setdefault("truncated", root / "truncated.ckpt")).write_bytes(good.read_bytes()[:5000])
    ckpt = torch.load(good, weights_only=True)
    variants = {
        "nan": lambda c: c["state_dict"]["model.net.features.conv1.conv.weight"].fill_(float("nan")),
        "prefix_target": lambda c: c["hyper_parameters"]["net"].update(_target_="cnn_lightning.nets.tiny.nn.Identity"),
        "huge_hparams": lambda c: c["hyper_parameters"]["net"].update(c1=100_000, c2=100_000, c3=100_000),
    }
    for name, mutate in variants.items():
        copy = torch.load(good, weights_only=True)
        mutate(copy)
        torch.save(copy, made.setdefault(name, root / f"{name}.ckpt"))
    del ckpt
    return made


@pytest.fixture(scope="module")
def digit_png(tmp_path_factory, mnist_test) -> Path:
    """A real test digit (a 7) as a PNG file."""
    path = tmp_path_factory.mktemp("png") / "seven.png"
    Image.fromarray(mnist_test[0][0]).save(path)
    return path


def _overrides_text(overrides: list[str]) -> str:
    return yaml.safe_dump(overrides)


@pytest.fixture(scope="module")
def hostile_runs(tmp_path_factory, trained_run) -> dict[str, Path]:
    """Copies of the real run whose saved overrides or summary a hostile sender rewrote, one
    unchanged copy (``plain``) and one under a name with spaces and quotes; ``records``: an
    outputs root whose every summary is malformed."""
    root = tmp_path_factory.mktemp("runs")
    saved = yaml.safe_load((trained_run / ".hydra" / "overrides.yaml").read_text())
    made: dict[str, Path] = {}

    def run(name: str, overrides: str | bytes | None = None, summary: str | None = None) -> None:
        made[name] = root / name
        shutil.copytree(trained_run, made[name])
        if overrides is not None:
            target = made[name] / ".hydra" / "overrides.yaml"
            target.write_bytes(overrides if isinstance(overrides, bytes) else overrides.encode())
        if summary is not None:
            (made[name] / "summary.json").write_text(summary)

    extra = {
        "callback_target": "+callbacks.evil={_target_:torch.load,f:/tmp/payload.pkl,weights_only:false}",
        "callback_key": "+callbacks.evil._target_=torch.load",
        "optimizer_target": "model.optimizer._target_=os.system",
        "partial": "+model.optimizer._partial_=true",
        "env_set": "+hydra.job.env_set.LD_PRELOAD=/tmp/evil.so",
        "hydra_callback": "+hydra.callbacks.evil._target_=os.system",
        "decode": "model.name=${oc.decode:x}",
        "env": "model.name=${oc.env:HOME}",
        "foreign_group": "model=../../../tmp/evil",
        "sweep": "seed=1,2",
        "added_key": "+trainer.plugins=[x]",
        "garbage": "==",
        "checkpoint_dir": "callbacks.model_checkpoint.dirpath=/tmp/elsewhere",
        "data_dir": "paths.data_dir=/tmp/elsewhere",
    }
    for name, override in extra.items():
        run(name, _overrides_text([*saved, override]))
    run("not_a_list", "a: 1\n")
    run("item_dict", "- {a: 1}\n")
    run("nested", "[" * 60 + "]" * 60 + "\n")
    run("huge", "- seed=1\n" * 200_000)
    run("bad_yaml", "- [unclosed\n")
    run("not_utf8", b"- seed=\xff\xfe\n")
    run("plain")
    run("with spaces, 'quotes'")
    good = json.loads((trained_run / "summary.json").read_text())
    run("bad_summary", summary=json.dumps({**good, "val_acc_best": float("inf")}))
    records = root / "records"
    for i, text in enumerate(_bad_summaries(good)):
        (records / f"run{i}").mkdir(parents=True)
        (records / f"run{i}" / "summary.json").write_text(text)
    made["records"] = records
    return made


def _bad_summaries(good: dict) -> list[str]:
    """Malformed ``summary.json`` texts of every class the tester found, none of them rankable."""
    texts = [json.dumps({**good, key: value}) for key, value in [
        ("val_acc_best", float("inf")), ("val_acc_best", "0.99"), ("val_acc_best", 10**400 // 10**399),
        ("val_acc_best", True), ("val_acc_best", -0.5), ("params", float("inf")), ("params", 10**30),
        ("params", "many"), ("epochs", 1.5), ("seed", -1), ("seed", [1]), ("model", {"a": 1}),
        ("model", "../../evil"), ("best_checkpoint", 5), ("wall_time_s", float("-inf")), ("test_acc", "nan"),
    ]]
    texts += [
        json.dumps({**good, "val_acc_best": float("nan")}),  # listed as unusable, never ranked
        '{"model": "tiny", "val_acc_best": ' + "9" * 5000 + "}",  # past Python's int digit limit
        "[" * 100_000 + "]" * 100_000,  # nested past the recursion limit
        '{"model": "tiny"',  # truncated
        "",
        json.dumps([good]),
        '{"model": "tiny", "val_acc_best": 0.99, "best_checkpoint": "' + "a" * 2_000_000 + '"}',
    ]
    return texts


@pytest.fixture(scope="module")
def readonly_dir(tmp_path_factory):
    """An empty directory nobody may write to: a read-only mount for root (whom file modes do
    not stop), file modes for anyone else."""
    path = tmp_path_factory.mktemp("readonly")
    mounted = os.geteuid() == 0 and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(path)], capture_output=True
    ).returncode == 0
    if not mounted:
        path.chmod(0o555)
    if os.access(path, os.W_OK) and not mounted:
        pytest.skip("cannot make a read-only directory here (root without mount)")
    yield path
    if mounted:
        subprocess.run(["umount", str(path)], check=False)
    else:
        path.chmod(0o755)


@pytest.fixture(autouse=True)
def keep_logging():
    """Hydra's in-process runs reconfigure logging (and its "disabled" preset disables every
    existing logger): put it back, or later tests would see no log records."""
    root = logging.getLogger()
    saved_root = (root.level, list(root.handlers))
    saved = {name: (lg.disabled, lg.level, list(lg.handlers), lg.propagate)
             for name, lg in logging.root.manager.loggerDict.items() if isinstance(lg, logging.Logger)}
    yield
    root.setLevel(saved_root[0])
    root.handlers[:] = saved_root[1]
    for name, lg in logging.root.manager.loggerDict.items():
        if isinstance(lg, logging.Logger):
            lg.disabled, lg.level, handlers, lg.propagate = saved.get(name, (False, logging.NOTSET, [], True))
            lg.handlers[:] = handlers


def _in_process(entry, argv: list[str], capsys) -> tuple[int, str]:
    """Run a command's ``main`` as its command line would; (exit status, what it said)."""
    capsys.readouterr()
    try:
        status = entry(argv)
    except SystemExit as exit_:
        status = exit_.code
    said = capsys.readouterr().err
    if isinstance(status, str):  # SystemExit("message"): Python prints it and exits 1
        said, status = status + "\n", 1
    return int(status or 0), said


def _hydra_main(module, config_dir_args: list[str]):
    def entry(argv: list[str]):
        sys.argv = [module.__name__, f"--config-path={ROOT / 'conf'}", *config_dir_args, *argv]
        sys.argv[1:] = module.cli(sys.argv[1:])  # as `python -m <module>` does, before Hydra's main
        return module.main()

    return entry


QUIET = ["hydra/job_logging=disabled", "hydra/hydra_logging=disabled"]
ENTRIES = {
    "train": lambda tmp: _hydra_main(train, [*QUIET, f"hydra.run.dir={tmp / 'run'}"]),
    "evaluate": lambda tmp: _hydra_main(evaluate, [*QUIET, f"hydra.run.dir={tmp / 'eval'}"]),
    "export": lambda tmp: _hydra_main(export, [*QUIET, "check=false"]),
    "predict": lambda tmp: predict.main,
    "summary": lambda tmp: summary.main,
    "gui": lambda tmp: gui_cli.main,
}

# (entry point, arguments with {file} placeholders, what the one line must say).
# Hydra's own type errors name the key in a short message of a few lines (marked "hydra").
CASES = [
    ("train", ["data.batch_size=1000000000"], "data.batch_size=1000000000: must be in [1, 55000]"),
    ("train", ["data.batch_size=1e9"], "hydra:data.batch_size"),
    ("train", ["data.batch_size=0"], "data.batch_size=0"),
    ("train", ["data.batch_size=30000", "trainer=ddp_sim"], "over 2 processes"),
    ("train", ["data.eval_batch_size=20000"], "data.eval_batch_size=20000"),
    ("train", ["data.val_size=60000"], "data.val_size=60000"),
    ("train", ["data.val_size=0"], "data.val_size=0"),
    ("train", ["model.optimizer.lr=-0.1"], "model.optimizer.lr=-0.1: must be in (0, inf]"),
    ("train", ["model.optimizer.lr=nan"], "model.optimizer.lr=nan: must be finite"),
    ("train", ["model.scheduler.max_lr=-1"], "model.scheduler.max_lr=-1"),
    ("train", ["model.scheduler.pct_start=1.5"], "model.scheduler.pct_start=1.5"),
    ("train", ["model.optimizer.momentum=1.5"], "model.optimizer.momentum=1.5"),
    ("train", ["model.optimizer.weight_decay=-1"], "model.optimizer.weight_decay=-1"),
    ("train", ["trainer.max_epochs=0"], "trainer.max_epochs=0"),
    ("train", ["trainer.max_epochs=abc"], "hydra:trainer.max_epochs"),
    ("train", ["trainer.accumulate_grad_batches=0"], "trainer.accumulate_grad_batches=0"),
    ("train", ["trainer.limit_train_batches=1.5"], "trainer.limit_train_batches=1.5"),
    ("train", ["trainer.gradient_clip_val=-1"], "trainer.gradient_clip_val=-1"),
    ("train", ["trainer.devices=0"], "trainer.devices=0"),
    ("train", ["model.label_smoothing=1"], "model.label_smoothing=1"),
    ("train", ["model.l1=-0.1"], "model.l1=-0.1"),
    ("train", ["model.scheduler_interval=hour"], "model.scheduler_interval='hour'"),
    ("train", ["model.net.kernel_size=4"], "model.net.kernel_size=4: must be odd"),
    ("train", ["model.net.kernel_size=27"], "(W - F + 2P)/S + 1 = (2 - 27 + 2*0)/1 + 1 = -24"),
    ("train", ["model=lenet", "model.net.kernel_size=13", "model.net.padding=0"], "(W - F + 2P)/S + 1"),
    ("train", ["model.net.padding=-1"], "model.net.padding=-1"),
    ("train", ["model.net.c1=100000000"], "model.net.c1=100000000"),
    ("train", ["model=lenet", "model.net.fc1=1000000"], "parameters: at most"),
    ("train", ["model.net.dropout=1.0"], "model.net.dropout=1.0"),
    ("train", ["model.net.c2=40"], "tiny: 10,136 trainable parameters, over its budget max_params=7,999"),
    ("train", ["model=micro", "model.net.c4=24"], "over its budget max_params=4,999"),
    ("train", ["max_params=0"], "max_params=0: must be in [1, inf]"),
    ("train", ["+model.net.c9=3"], "not arguments of TinyNet"),
    ("train", ["model.net._target_=cnn_lightning.nets.tiny.nn.Identity"], "not one of cnn_lightning.nets"),
    ("train", ["model.net._target_=os.system"], "not one of cnn_lightning.nets"),
    ("train", ["seed=-1"], "seed=-1"),
    ("train", ["data.augment.degrees=-5"], "data.augment.degrees=-5"),
    ("train", ["data.augment.scale=[1.2,0.8]"], "low must not exceed high"),
    ("train", ["data.augment.elastic_alpha=-3"], "data.augment.elastic_alpha=-3"),
    ("train", ["data.augment.elastic_sigma=0"], "data.augment.elastic_sigma=0"),
    ("train", ["ckpt_path={text}"], "not a zip archive"),
    ("train", ["ckpt_path={missing}"], "no such checkpoint file"),
    ("train", ["ckpt_path={nan}"], "NaN or infinite"),
    ("train", ["data.data_dir={readonly}"], "cannot be written"),
    ("train", ["resume={dir}"], "not a resumable run directory"),
    ("evaluate", ["ckpt={text}"], "not a zip archive"),
    ("evaluate", ["ckpt={missing}"], "no such checkpoint file"),
    ("evaluate", ["ckpt={truncated}"], "truncated or corrupt"),
    ("evaluate", ["ckpt={empty}"], "not a zip archive"),
    ("evaluate", ["ckpt={nan}"], "NaN or infinite"),
    ("evaluate", ["ckpt={prefix_target}"], "not one of cnn_lightning.nets"),
    ("evaluate", ["ckpt={huge_hparams}"], "parameters: at most"),
    ("evaluate", ["arch=resnet"], "arch='resnet': must be one of"),
    ("evaluate", ["device=tpu"], "device='tpu'"),
    ("evaluate", ["worst=-1"], "worst=-1"),
    ("evaluate", ["ensemble_per_model=0"], "ensemble_per_model=0"),
    ("evaluate", ["ensemble_models=tiny"], "must be a list of nets"),
    ("evaluate", ["ensemble_models=[tiny,resnet]"], "['resnet'] not among"),
    ("evaluate", ["ensemble_seed=-3"], "ensemble_seed=-3"),
    ("evaluate", ["outputs_root={missing}"], "no such directory"),
    ("evaluate", ["outputs_root={dir}"], "no finished run of any architecture under"),
    ("evaluate", ["data.eval_batch_size=0"], "data.eval_batch_size=0"),
    ("summary", ["model.net.kernel_size=27"], "(W - F + 2P)/S + 1"),
    ("summary", ["model.net.c1=-3"], "model.net.c1=-3"),
    ("summary", ["model=resnet"], "resnet"),
    ("gui", ["--checkpoint", "{missing}"], "no such checkpoint file"),
    ("gui", ["--checkpoint", "{text}"], "not a zip archive"),
    ("gui", ["--checkpoint", "{nan}"], "NaN or infinite"),
    ("gui", ["--checkpoint", "{prefix_target}"], "not one of cnn_lightning.nets"),
    ("gui", ["--outputs", "{missing}"], "no such directory"),
    ("gui", ["--bogus"], "unrecognized arguments: --bogus"),
    # ---- round 3: values outside a schema, Lightning's own choices, Hydra's run folder ----
    ("train", ["trainer.precision=bogus"], "trainer.precision=bogus: must be one of"),
    ("train", ["trainer.accelerator=tpu"], "trainer.accelerator=tpu: must be one of"),
    ("train", ["trainer.strategy=warp_drive"], "trainer.strategy=warp_drive: not a strategy"),
    ("train", ["trainer.val_check_interval=0"], "trainer.val_check_interval=0"),
    ("train", ["trainer.val_check_interval=1.5"], "trainer.val_check_interval=1.5"),
    ("train", ["model.net=5"], "model.net=5: must be a net's config"),
    ("train", ["model=null"], "model=null: choose a net"),
    ("train", ["+model.distill.teacher=123"], "model.distill.teacher=123"),
    ("train", ["+model.distill=5"], "model.distill=5"),
    ("train", ["+callbacks.extra.every=1"], "callbacks.extra={'every': 1}: not a callback config"),
    ("train", ["logger=bogus"], "Could not find 'logger/bogus'"),
    ("train", ["seed=1,2"], "Ambiguous value for argument 'seed=1,2'"),
    ("train", ["trainer.max_epochs=abc"], "Value 'abc' of type 'str' could not be converted to Integer"),
    ("train", ["trainer.max_time=abc"], "trainer.max_time=abc: must be DD:HH:MM:SS"),
    ("train", ["trainer.deterministic=maybe"], "trainer.deterministic=maybe"),
    ("train", ["trainer.profiler=bogus"], "trainer.profiler=bogus"),
    ("train", ["trainer.devices=abc"], "trainer.devices=abc"),
    ("train", ["hydra.run.dir={text}"], "is a file, not a folder"),
    ("train", ["hydra.run.dir={text}/run"], "is a file, not a folder"),
    ("train", ["hydra.run.dir={readonly}/run"], "cannot be written"),
    # ---- a run folder is data: its overrides never carry code, and a refusal leaves it as it was ----
    ("train", ["resume={run:callback_target}"], "names code"),
    ("train", ["resume={run:callback_key}"], "names code"),
    ("train", ["resume={run:optimizer_target}"], "names code"),
    ("train", ["resume={run:partial}"], "names code"),
    ("train", ["resume={run:env_set}"], "does not set Hydra's own config"),
    ("train", ["resume={run:hydra_callback}"], "does not set Hydra's own config"),
    ("train", ["resume={run:decode}"], "an interpolation"),
    ("train", ["resume={run:env}"], "an interpolation"),
    ("train", ["resume={run:foreign_group}"], "not one of conf/model/"),
    ("train", ["resume={run:sweep}"], "a sweep, not one value"),
    ("train", ["resume={run:added_key}"], "adds a key outside the config schema"),
    ("train", ["resume={run:checkpoint_dir}"], "does not say where to read or write"),
    ("train", ["resume={run:data_dir}"], "does not say where to read or write"),
    ("train", ["resume={run:data_dir}", "paths.data_dir={data}"], "the run finished (1 of 1 epochs)"),
    ("train", ["resume={run:not_a_list}"], "a list of at most"),
    ("train", ["resume={run:item_dict}"], "one line of text"),
    ("train", ["resume={run:nested}"], "one line of text"),
    ("train", ["resume={run:huge}"], "more than a run record holds"),
    ("train", ["resume={run:bad_yaml}"], "not valid YAML"),
    ("train", ["resume={run:not_utf8}"], "not UTF-8"),
    ("train", ["resume={run:garbage}"], "not an override"),
    ("train", ["resume={run:plain}", "data.batch_size=0"], "data.batch_size=0"),
    ("train", ["resume={run:plain}", "model=lenet"], "its checkpoint holds a tiny net"),
    ("train", ["resume={run:plain}"], "the run finished (1 of 1 epochs)"),
    ("train", ["resume={run:with spaces, 'quotes'}"], "the run finished (1 of 1 epochs)"),
    ("train", ["resume={run:bad_summary}"], "is outside"),
    ("evaluate", ["ckpt=null"], "ckpt"),
    ("evaluate", ["worst=abc"], "worst"),
    ("evaluate", ["ensemble=maybe"], "ensemble"),
    ("evaluate", ["data.data_dir={readonly}"], "cannot be written"),
    ("evaluate", ["outputs_root={run:records}"], "no finished run of any architecture under"),
    ("evaluate", ["hydra.run.dir={text}"], "is a file, not a folder"),
    ("export", ["ckpt={good}", "output={good}"], "that is the checkpoint being exported"),
    ("export", ["ckpt={good}", "output=/dev/null"], "/dev/null: not a regular file"),
    ("export", ["ckpt={good}", "output={dir}"], "not a regular file"),
    ("export", ["ckpt={good}", "output={text}/net.onnx"], "is a file, not a folder"),
    ("export", ["ckpt={good}", "output={readonly}/net.onnx"], "cannot be written"),
    ("export", ["ckpt={good}", "output={raw}/t10k-images-idx3-ubyte"], "inside the data folder"),
    ("export", ["ckpt={good}", "tolerance=abc"], "tolerance"),
    ("export", ["ckpt={good}", "tolerance=-1"], "tolerance=-1.0: must be in [0, 1000000.0]"),
    ("export", ["ckpt={good}", "check=maybe"], "check"),
    ("export", ["ckpt={good}", "format=tflite"], "format=tflite is not one of onnx, torchscript"),
    ("export", ["ckpt=1"], "no such checkpoint file"),
    ("export", ["ckpt=null"], "ckpt"),
    ("export", ["ckpt={nan}"], "NaN or infinite"),
    ("export", ["arch=resnet"], "arch='resnet'"),
    ("export", ["outputs_root={run:records}"], "no finished run of any architecture"),
    ("predict", ["{png}", "ckpt={good}", "batch_size=0"], "batch_size=0"),
    ("predict", ["{png}", "ckpt={good}", "batch_size=abc"], "batch_size"),
    ("predict", ["{png}", "ckpt=1"], "no such checkpoint file"),
    ("predict", ["{png}", "ckpt=null"], "ckpt"),
    ("predict", ["{png}", "arch=resnet"], "arch='resnet'"),
    ("predict", ["{png}", "outputs_root={run:records}"], "no finished run of any architecture"),
    ("summary", ["model.net=5"], "model.net=5"),
    ("summary", ["model=null"], "choose a net"),
]


@pytest.mark.parametrize(("entry", "args", "says"), CASES, ids=[f"{e}:{' '.join(a)}" for e, a, _ in CASES])
def test_bad_input_is_refused_in_one_line_and_loses_nothing(
    entry, args, says, files, hostile_runs, readonly_dir, trained_run, mnist_dir, tmp_path, capsys, monkeypatch,
):
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    names = {**{k: str(v) for k, v in files.items()}, "readonly": str(readonly_dir),
             "data": str(mnist_dir), "raw": str(raw_dir(mnist_dir)),
             **{f"run:{k}": str(v) for k, v in hostile_runs.items()}}
    argv = [re.sub(r"\{([^{}]+)\}", lambda m: names[m.group(1)], a) for a in args]
    watched = (trained_run, files["dir"], hostile_runs["records"].parent, mnist_dir / "MNIST" / "raw")
    before = snapshot(*watched)

    status, said = _in_process(ENTRIES[entry](tmp_path), argv, capsys)

    assert status != 0, f"accepted: {said}"
    assert "Traceback" not in said, said
    if says.startswith("hydra:"):  # Hydra's message: short, and names the key
        assert says.removeprefix("hydra:") in said, said
    else:
        lines = [line for line in said.splitlines() if line.strip()]
        assert len(lines) == 1, said
        assert says in lines[0], said
    assert snapshot(*watched) == before
    assert not list(tmp_path.iterdir()), f"a refused command wrote {list(tmp_path.rglob('*'))}"


def test_table_covers_every_entry_point_with_forty_cases():
    assert len(CASES) >= 130
    assert {entry for entry, _, _ in CASES} == set(ENTRIES)


@pytest.mark.parametrize(
    ("module", "args", "says"),
    [
        ("cnn_lightning.train", ["data.batch_size=1000000000"], "train: data.batch_size=1000000000"),
        ("cnn_lightning.evaluate", ["ckpt={text}"], "cannot evaluate: ckpt="),
        ("gui", ["--checkpoint", "{nan}"], "python -m gui: --checkpoint"),
    ],
)
def test_the_real_commands_exit_non_zero_with_one_line_on_stderr(module, args, says, files, tmp_path):
    argv = [a.format(**{k: str(v) for k, v in files.items()}) for a in args]
    if module != "gui":
        argv.append(f"hydra.run.dir={tmp_path / 'run'}")
    result = subprocess.run([sys.executable, "-m", module, *argv], cwd=ROOT, env=train_env(),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(says), result.stderr


# ---- the checkpoint fuzz ------------------------------------------------------------------


class RunsCode:
    """Unpickling this would run a shell command; weights_only must refuse it."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _zip_members(data: bytes) -> list[tuple[zipfile.ZipInfo, bytes]]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return [(info, archive.read(info)) for info in archive.infolist()]


def _rezip(members, compression=zipfile.ZIP_STORED) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=compression) as archive:
        for info, payload in members:
            archive.writestr(info.filename, payload, compress_type=compression)
    return out.getvalue()


def _zip_bomb(members) -> bytes:
    """The checkpoint plus a member of 200 MiB of zeros deflated to a few hundred KiB."""
    out = io.BytesIO(_rezip(members))
    with zipfile.ZipFile(out, "a", compression=zipfile.ZIP_DEFLATED) as archive, \
            archive.open("archive/data/bomb", "w") as bomb:
        chunk = bytes(2**20)
        for _ in range(200):
            bomb.write(chunk)
    return out.getvalue()


def _saved(checkpoint) -> bytes:
    out = io.BytesIO()
    torch.save(checkpoint, out)
    return out.getvalue()


def mutations(good: bytes, rng: random.Random, marker: Path):
    """(name, bytes) pairs: every kind of damage the issue lists, seeded."""
    for i in range(70):  # bytes flipped anywhere
        data = bytearray(good)
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        yield f"flip{i}", bytes(data)
    for i in range(30):  # truncated
        yield f"truncate{i}", good[: rng.randrange(len(good))]
    members = _zip_members(good)
    for i, (info, _) in enumerate(members):  # a member removed, or renamed
        yield f"remove:{info.filename}", _rezip([m for j, m in enumerate(members) if j != i])
        renamed = [(zipfile.ZipInfo(info.filename + "x"), p) if j == i else (inf, p) for j, (inf, p) in enumerate(members)]
        yield f"rename:{info.filename}", _rezip(renamed)
    yield "deflated", _rezip(members, zipfile.ZIP_DEFLATED)
    yield "zip-bomb", _zip_bomb(members)
    yield "empty", b""
    yield "text", b"epoch,val_acc\n0,0.99\n"
    yield "png", b"\x89PNG\r\n\x1a\n" + bytes(rng.randrange(256) for _ in range(500))
    yield "random", bytes(rng.randrange(256) for _ in range(len(good)))
    yield "legacy-pickle-code", pickle.dumps({"state_dict": RunsCode(marker)})

    base = torch.load(io.BytesIO(good), weights_only=True)
    keys = sorted(base["state_dict"])

    def edited(edit):
        checkpoint = torch.load(io.BytesIO(good), weights_only=True)
        edit(checkpoint)
        return _saved(checkpoint)

    def put(key, value):
        return edited(lambda c: c["state_dict"].__setitem__(key, value))

    for i in range(50):  # tensors of the wrong shape, dtype or size, NaN and inf, keys missing or extra
        key = rng.choice(keys)
        tensor = base["state_dict"][key]
        kind = i % 10
        if kind == 0:
            yield f"shape:{key}", put(key, torch.zeros(*(s + 1 for s in tensor.shape)) if tensor.dim() else torch.zeros(2))
        elif kind == 1:
            yield f"dtype64:{key}", put(key, tensor.double())
        elif kind == 2:
            yield f"dtype16:{key}", put(key, tensor.half())
        elif kind == 3:
            yield f"int:{key}", put(key, tensor.long())
        elif kind == 4:
            yield f"nan:{key}", put(key, tensor.float().fill_(float("nan")))
        elif kind == 5:
            yield f"inf:{key}", put(key, tensor.float().fill_(float("inf")))
        elif kind == 6:
            yield f"missing:{key}", edited(lambda c, k=key: c["state_dict"].pop(k))
        elif kind == 7:
            yield f"extra:{key}", put(key + "_extra", torch.zeros(3))
        elif kind == 8:  # a huge declared shape over one float of storage
            yield f"huge-view:{key}", put(key, torch.zeros(1).expand(100_000, 100_000))
        else:
            yield f"not-a-tensor:{key}", put(key, [1.0, 2.0, 3.0])

    hostile_nets = [
        {"_target_": "cnn_lightning.nets.tiny.nn.Identity"},
        {"_target_": "cnn_lightning.nets.layers.torch.nn.Linear", "in_features": 10, "out_features": 10},
        {"_target_": "os.system", "command": "true"},
        {"_target_": "builtins.eval", "source": "1"},
        {"_target_": "torch.nn.Linear", "in_features": 784, "out_features": 10},
        {"_target_": "cnn_lightning.nets.TinyNetX"},
        {"_target_": 42},
        {},
    ]
    for net in hostile_nets:
        yield f"target:{net.get('_target_')}", edited(lambda c, n=net: c["hyper_parameters"].__setitem__("net", n))
    bad_values = [
        ("c1", 100_000), ("c1", 0), ("c1", -1), ("c1", "8"), ("c1", 8.5), ("c1", [8]), ("c1", True),
        ("c5", 10**12), ("kernel_size", 4), ("kernel_size", 29), ("kernel_size", 27), ("padding", -1),
        ("padding", 10**6), ("dropout", 1.5), ("dropout", float("nan")), ("num_classes", 11),
        ("pool_type", "median"), ("squeeze", 10**6), ("unknown_arg", 1), ("c2", None),
    ]
    for key, value in bad_values:
        yield f"hparam:{key}={value!r}", edited(lambda c, k=key, v=value: c["hyper_parameters"]["net"].__setitem__(k, v))
    # everything of this size at once: the crafted 86 KB file that once allocated 3.1 GB
    yield "hparams-huge", edited(lambda c: c["hyper_parameters"]["net"].update(c1=60_000, c2=60_000, c3=60_000, c4=60_000))
    yield "no-hparams", edited(lambda c: c.pop("hyper_parameters"))
    yield "hparams-not-dict", edited(lambda c: c.__setitem__("hyper_parameters", [1, 2]))
    yield "net-not-dict", edited(lambda c: c["hyper_parameters"].__setitem__("net", "TinyNet"))
    yield "no-state", edited(lambda c: c.pop("state_dict"))
    yield "state-not-dict", edited(lambda c: c.__setitem__("state_dict", torch.zeros(3)))
    yield "not-a-dict", _saved([1, 2, 3])
    yield "unchanged-extra-entry", edited(lambda c: c.__setitem__("note", "harmless"))
    for where in ("top", "hparams", "state"):  # pickled objects that would run code
        def plant(c, w=where):
            target = {"top": c, "hparams": c["hyper_parameters"], "state": c["state_dict"]}[w]
            target["payload"] = RunsCode(marker)
        checkpoint = torch.load(io.BytesIO(good), weights_only=True)
        plant(checkpoint)
        yield f"code:{where}", _saved(checkpoint)


def test_two_hundred_mutations_of_a_real_checkpoint_end_in_a_clear_error_or_the_same_model(
    trained_run, tmp_path,
):
    good_path = Path(read_summary(trained_run)["best_checkpoint"])
    good = good_path.read_bytes()
    reference = load_model(good_path).state_dict()
    marker = tmp_path / "code-ran"
    cases = list(mutations(good, random.Random(14), marker))
    assert len(cases) >= 200
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    outcomes = {"refused": 0, "identical": 0}
    for name, data in cases:
        path = tmp_path / "mutated.ckpt"
        path.write_bytes(data)
        for loader in (load_model, lambda p: Predictor.from_checkpoint(p).model):
            try:
                model = loader(path)
            except CheckpointError as err:
                assert "\n" not in str(err) and str(path) in str(err), f"{name}: {err}"
                outcomes["refused"] += 1
                continue
            state = model.state_dict()
            assert state.keys() == reference.keys() and all(torch.equal(state[k], reference[k]) for k in state), \
                f"{name}: loaded a model that differs from the checkpoint's"
            outcomes["identical"] += 1
    assert not marker.exists(), "a checkpoint ran code"
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    print(f"\n{len(cases)} mutations x 2 loaders: {outcomes}; peak memory grew {grown_mib:.0f} MiB")
    assert grown_mib < 300, f"loading mutations grew the peak memory by {grown_mib:.0f} MiB"
    assert outcomes["refused"] > 300
