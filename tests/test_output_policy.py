"""The output policy (common.core.results), full disks, Ctrl-C with loader processes, and the warm-up default.

Refusals of the policy are cases of tests/test_bad_input_matrix.py too; here: what it allows, the
concurrency and I/O-error paths, which need a second process or a file-size limit.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import DEMO_MODEL, MINI, REPO, SCRIPTS
from test_bad_input_matrix import _run

from common.core.errors import UserError
from common.core.results import (
    atomic_write_json,
    check_output_paths,
    claim_output,
    file_digests,
    release_outputs,
    stamp,
    written_by_us,
)

EVAL = "eval_yolov10m_onnx_coco"
PYTHONPATH = os.pathsep.join([str(SCRIPTS), str(REPO / "scripts" / "trt")])


def _eval(out: str, *extra: str, images: int = 2) -> list[str]:
    return [
        "--onnx-path",
        str(DEMO_MODEL),
        "--providers",
        "CPUExecutionProvider",
        "--data-root",
        str(MINI),
        "--max-images",
        str(images),
        "--workers",
        "0",
        "--no-progress",
        "--out",
        out,
        *extra,
    ]


# ----------------------------------------------------------------------------- what we wrote


def test_stamped_json_and_the_files_it_records_are_ours(tmp_path):
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"metrics": 1}))
    dets = tmp_path / "d.json"
    dets.write_text("[]")
    meta = tmp_path / "m.json"
    atomic_write_json(meta, stamp({"a": 1}, file_digests(dets)))
    assert json.loads(meta.read_text())["written_by"] == "yolov10-trt-toolkit"
    assert written_by_us(meta) and not written_by_us(other)
    assert written_by_us(dets, [meta]) and not written_by_us(dets)  # only where a JSON of ours vouches for it
    dets.write_text("[ ]")  # changed since: no longer what we wrote
    assert not written_by_us(dets, [meta])
    engine = tmp_path / "e.engine"
    engine.write_bytes(b"engine")
    atomic_write_json(tmp_path / "e.engine.json", stamp({}, file_digests(engine)))  # a sidecar vouches by itself
    assert written_by_us(engine)


def test_eval_replaces_its_own_outputs_and_refuses_others(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out, dets = tmp_path / "m.json", tmp_path / "d.json"
    rc, _, err = _run(EVAL, _eval(str(out), "--detections-out", str(dets)), capsys)
    assert rc == 0, err
    rc, _, err = _run(EVAL, _eval(str(out), "--detections-out", str(dets)), capsys)  # a rerun: ours, replaced
    assert rc == 0, err
    notes = tmp_path / "notes.md"
    notes.write_text("my notes\n")
    rc, _, err = _run(EVAL, _eval(str(notes)), capsys)
    assert rc == 2 and "was not written by this toolkit" in err and notes.read_text() == "my notes\n"
    rc, _, err = _run(EVAL, _eval(str(notes), "--force"), capsys)
    assert rc == 0, err
    assert json.loads(notes.read_text())["written_by"] == "yolov10-trt-toolkit"


def test_a_trailing_slash_names_a_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, _, err = _run(EVAL, _eval("newdir/"), capsys)
    assert rc == 0, err
    assert (tmp_path / "newdir").is_dir() and (tmp_path / "newdir" / "metrics.json").is_file()


def test_output_claims_release_and_refuse(tmp_path):
    target = tmp_path / "m.json"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"from common.core.results import claim_output; claim_output('--out', {str(target)!r}); "
            "print('held', flush=True); input()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": PYTHONPATH},
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(
            UserError, match=rf"--out {target} is being written by another run \(process {holder.pid}\)"
        ):
            check_output_paths({"--out": target}, {})
    finally:
        holder.communicate("\n", timeout=30)
    check_output_paths({"--out": target}, {})  # the other run ended: free again
    claim_output("--out", target)  # a second claim of this process's own output is fine
    release_outputs()


def test_two_evaluations_writing_one_file_cannot_both_win(tmp_path):
    """The second run is refused at once (before any work) while the first holds the path."""
    out = tmp_path / "m.json"
    argv = _eval(str(out), "--warmup-runs", "0")
    slow = textwrap.dedent(
        f"""
        import sys
        from common.ort import session
        real = session.OrtBackend.infer
        def infer(self, batch):
            print("running", flush=True)
            sys.stdin.readline()  # held until the test has tried the second run
            session.OrtBackend.infer = real
            return real(self, batch)
        session.OrtBackend.infer = infer
        import eval_yolov10m_onnx_coco as E
        from common.core.cli import run_main
        sys.exit(run_main(E.main, {argv!r}))
        """
    )
    env = {**os.environ, "PYTHONPATH": PYTHONPATH}
    first = subprocess.Popen(
        [sys.executable, "-c", slow], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=tmp_path
    )
    try:
        assert any(line.strip() == "running" for line in iter(first.stdout.readline, ""))  # inference started
        second = subprocess.run(
            [sys.executable, str(SCRIPTS / f"{EVAL}.py"), *_eval(str(out))],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=120,
        )
        assert second.returncode == 2 and "is being written by another run" in second.stderr, second.stderr
    finally:
        first.communicate("\n", timeout=120)  # (kills nothing: it ends by itself once it may go on)
    assert first.returncode == 0 and json.loads(out.read_text())["written_by"] == "yolov10-trt-toolkit"


# ----------------------------------------------------------------------------- a full disk


def _limited(cmd: list[str], cwd: Path, max_bytes: int) -> subprocess.CompletedProcess:
    """``cmd`` where no file may grow past ``max_bytes`` (writes fail with EFBIG, as on a full disk)."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    env = {**os.environ, "PYTHONPATH": PYTHONPATH, "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=env, preexec_fn=limit, timeout=300)


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.parametrize(
    "script, argv",
    [
        (f"{EVAL}.py", _eval("out/m.json", "--detections-out", "out/d.json")),
        (
            "make_calib_npy.py",
            [
                "--images-dir",
                str(MINI / "val2017"),
                "--num-images",
                "2",
                "--imgsz",
                "64",
                "--no-progress",
                "--out",
                "out/c.npy",
            ],
        ),
    ],
    ids=["eval", "calib"],
)
def test_a_full_disk_is_one_line_and_leaves_nothing(tmp_path, script, argv):
    proc = _limited([sys.executable, str(SCRIPTS / script), *argv], tmp_path, 2048)
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error")]
    assert proc.returncode == 2, proc.stderr  # not SIGBUS (-7), not a traceback
    assert "Traceback" not in proc.stderr and proc.stderr.rstrip().splitlines()[-1] == errors[0], proc.stderr
    assert len(errors) == 1 and errors[0].startswith("error: cannot write") and "File too large" in errors[0]
    assert _files(tmp_path) == [], _files(tmp_path)  # no partial file, no hidden temporary, no folder


def test_compare_on_a_full_disk(tmp_path):
    from test_compare import ORT_CPU, TRT, _payload, _write

    a = _write(tmp_path / "a", _payload("m.onnx", "aa", ORT_CPU, 0.5, 4.0, None))
    b = _write(tmp_path / "b", _payload("m.onnx", "aa", TRT, 0.5, 4.0, None))
    proc = _limited(
        [sys.executable, str(SCRIPTS / "compare_runs.py"), str(a), str(b), "--out-dir", "cmp"], tmp_path, 512
    )
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "cannot write" in proc.stderr, proc.stderr
    assert not (tmp_path / "cmp").exists() or _files(tmp_path / "cmp") == []


# ----------------------------------------------------------------------------- Ctrl-C with loader processes


def test_ctrl_c_with_loader_processes_prints_one_line(tmp_path):
    """A terminal's Ctrl-C reaches the whole foreground process group: only `interrupted` is printed."""
    argv = _eval("m.json", "--workers", "2", "--loaders", "processes", "--warmup-runs", "0", images=12)
    driver = textwrap.dedent(
        f"""
        import os, signal, sys
        from common.ort import session
        real, calls = session.OrtBackend.infer, []
        def infer(self, batch):
            calls.append(1)
            if len(calls) == 3:  # the loader processes are up and busy: Ctrl-C
                os.killpg(0, signal.SIGINT)
            return real(self, batch)
        session.OrtBackend.infer = infer
        import eval_yolov10m_onnx_coco as E
        from common.core.cli import run_main
        sys.exit(run_main(E.main, {argv!r}))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", driver],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": PYTHONPATH},
        start_new_session=True,  # its own process group, as a shell gives a foreground job
        timeout=300,
    )
    assert proc.returncode == 130, proc.stderr
    # the run's own lines (the execution providers) came before; the interrupt adds `interrupted` and nothing else
    assert proc.stderr.endswith(
        "execution providers (priority order):\n  CPUExecutionProvider: (EP defaults)\ninterrupted\n"
    ), proc.stderr
    assert not (tmp_path / "m.json").exists()


# ----------------------------------------------------------------------------- warm-up


def test_warmup_auto_is_one_run_on_the_cpu_and_never_larger_than_the_selection(tmp_path, capsys, monkeypatch):
    from common.ort import session

    batches: list[int] = []
    real = session.OrtBackend.infer

    def infer(self, batch):
        batches.append(int(batch.shape[0]))
        return real(self, batch)

    monkeypatch.setattr(session.OrtBackend, "infer", infer)
    model = REPO.parent / "shared" / "fixtures" / "models" / "yolov10n-synth-dynbatch.onnx"
    if not model.is_file():
        pytest.skip("needs the shared dynamic-batch fixture model")
    monkeypatch.chdir(tmp_path)
    argv = _eval(str(tmp_path / "m.json"), "--batch-size", "8", images=3)
    argv[argv.index(str(DEMO_MODEL))] = str(model)
    rc, _, err = _run(EVAL, argv, capsys)
    assert rc == 0, err
    assert batches == [3, 3]  # one warm-up run of the only shape the run has (3 images), then the batch
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["warmup_runs"] == 1 and m["warmup_runs_requested"] == "auto"


def test_warmup_auto_resolves_by_device():
    from common.eval.options import resolve_warmup_runs

    class Ort:
        def __init__(self, *providers: str) -> None:
            self.providers_used = list(providers)

    cpu, gpu = Ort("CPUExecutionProvider"), Ort("CUDAExecutionProvider", "CPUExecutionProvider")
    assert resolve_warmup_runs("auto", cpu) == 1
    assert resolve_warmup_runs("auto", gpu) == resolve_warmup_runs("auto", object()) == 10  # object(): an engine
    assert resolve_warmup_runs(4, cpu) == 4


def test_skip_latency_leaves_a_sample():
    from common.eval.api import check_skip_latency

    check_skip_latency(5, 6, 1)
    with pytest.raises(UserError, match=r"--skip-latency 6 would drop every latency sample.*--skip-latency 5"):
        check_skip_latency(6, 6, 1)
    with pytest.raises(UserError, match=r"1 batch\(es\)"):
        check_skip_latency(1, 6, 64)


# ----------------------------------------------------------------------------- a Python without the dependencies

SCRIPT_FILES = sorted(SCRIPTS.glob("*.py")) + [
    REPO / "scripts" / "trt" / n for n in ("trt_doctor.py", "setup_tensorrt.py")
]


@pytest.mark.parametrize("script", SCRIPT_FILES, ids=[p.name for p in SCRIPT_FILES])
def test_a_python_without_the_dependencies_gets_one_line_naming_the_setup(script, tmp_path):
    """``python -S`` leaves site-packages out: numpy & co. are missing, as on a bare system Python."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    proc = subprocess.run(
        [sys.executable, "-S", str(script.relative_to(REPO)), "--help"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**env, "PYTHONDONTWRITEBYTECODE": "1"},
        timeout=120,
    )
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: this Python") and "no module named" in lines[0]
    job = "python-quant" if script.name == "quantize_onnx.py" else "python"
    assert f"bash scripts/dev/venv.sh {job} {script.relative_to(REPO)}" in lines[0]


def test_an_engine_build_on_a_full_disk(tmp_path):
    """The TensorRT-RTX builder runs on the CPU: its engine can't be written, one line, nothing left."""
    pytest.importorskip("tensorrt_rtx")
    import trt_double

    model = trt_double.tiny_model(tmp_path.parent / f"{tmp_path.name}-tiny.onnx")
    cmd = [sys.executable, str(SCRIPTS / "build_trt_engine.py"), "--onnx-path", str(model), "--trt-api", "tensorrt-rtx"]
    proc = _limited(
        [*cmd, "--engine-path", "out/e.engine", "--trt-verbosity", "error", "--no-build-progress"], tmp_path, 512
    )
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error")]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert len(errors) == 1 and errors[0].startswith("error: cannot write") and "File too large" in errors[0]
    assert _files(tmp_path) == [], _files(tmp_path)
