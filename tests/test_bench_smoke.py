"""bench_eval_throughput.py --smoke: the CI-sized run of the side-by-side benchmark (CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import MINI, fixture_path, run_script


def test_smoke_benchmark_writes_table_and_json(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = run_script("bench_eval_throughput.py", "--smoke", "--no-ultralytics", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "(a) ceiling" in proc.stdout and "sequential" in proc.stdout
    report = json.loads(out.read_text())
    (row,) = report["rows"]
    assert report["device"] == "cpu" and report["images"] == 8
    assert row["batch_size"] == 1 and row["ceiling"]["images_per_s"] > 0
    assert row["ours"]["ort-cpu"]["images_per_s"] > 0 and row["sequential"]["mode"] == "sequential"
    ours = row["ours"]["ort-cpu"]  # what ran: the modes auto resolved to, the pipeline's shape, the host CPU cost
    assert (ours["preprocess_mode"], ours["postprocess_mode"], ours["loaders"]) == ("cpu", "cpu", "threads")
    assert ours["workers"] >= 1 and ours["in_flight"] >= 1 and ours["cpu_ms_per_image"] > 0
    # the pipelined evaluator and the sequential path score identically
    assert row["stats_identical"] is True and row["ap_ours"] == row["ap_sequential"]
    assert row["ratio_to_ceiling"] == row["best_ours_images_per_s"] / row["ceiling"]["images_per_s"]
    assert row["ceiling"]["best"] == "serial" and row["ceiling"]["overlap"] is None  # a plain CPU session
    assert row["detections_identical"]["ort-cpu"] is True and row["main_ratio_to_best"] == 1.0
    assert "= ceiling" in proc.stdout and "detections identical" in proc.stdout
    # what a user waits for a val2017-sized run: the backend's start-up plus 5000 images at the measured rate
    assert 0 < ours["start_seconds"] < 60
    want = ours["start_seconds"] + 5000 / ours["images_per_s"]
    assert row["seconds_for_val2017"] == {"ort-cpu": pytest.approx(want)}
    assert "start-up + 5000 images" in proc.stdout and "soonest ort-cpu" in proc.stdout


def test_repeat_rounds_up_to_whole_batches() -> None:
    from common.throughput.bench.runs import repeat_ids

    ids = [5, 6, 7]
    assert repeat_ids(ids, 7) == [5, 6, 7, 5, 6, 7, 5]
    got = repeat_ids(ids, 7, batch=4)
    assert len(got) == 8 and got[:3] == ids  # no partial last batch: no new input shape mid-run
    assert len(repeat_ids(ids, 1, batch=2)) == 4  # never fewer than the distinct images


@pytest.mark.fixtures
def test_batch_sweep_keeps_a_row_per_batch_size(tmp_path: Path) -> None:
    model = fixture_path("models", "yolov10n-synth-dynbatch.onnx")
    out = tmp_path / "sweep.json"
    proc = run_script(
        "bench_eval_throughput.py",
        "--onnx-path",
        str(model),
        "--data-root",
        str(MINI),
        "--max-images",
        "8",
        "--batch-sizes",
        "1",
        "4",
        "--min-seconds",
        "0.3",
        "--cpu",
        "--no-ultralytics",
        "--skip-sequential",
        "--workers",
        "2",
        "--out",
        str(out),
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert report["complete"] is True and [r["batch_size"] for r in report["rows"]] == [1, 4]
    for row in report["rows"]:
        assert row["stats_identical"] is True  # batch size never changes the detections
        assert row["ours"]["ort-cpu"]["images"] % row["batch_size"] == 0


def test_smoke_replay_capacity_keeps_the_real_detections(tmp_path: Path) -> None:
    """--replay: the real evaluator over recorded outputs; whole batches of any size, the real model's AP."""
    out = tmp_path / "replay.json"
    proc = run_script("bench_eval_throughput.py", "--smoke", "--replay", "--batch-sizes", "1", "3", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "replay, preprocess" in proc.stdout
    report = json.loads(out.read_text())
    assert report["mode"] == "replay" and report["complete"] is True
    rows = report["replay"]
    assert [r["batch_size"] for r in rows] == [1, 3]
    for row in rows:
        d = row["modes"]["cpu"]
        assert d["images_per_s"] > 0 and d["images"] % row["batch_size"] == 0 and not row["failed"]
        assert d["ap"] == row["ap_real"] and d["ap"] > 0.1  # the replay hands back the right image's outputs
    assert rows[1]["images_distinct"] == 6  # 8 images -> the longest prefix of whole batches of 3


def test_smoke_tensorrt_variant_and_time_to_metrics_through_the_double(tmp_path: Path, monkeypatch) -> None:
    """--trt-backend in --smoke: the TensorRT backend (runtime double, host-memory CUDA fake) is timed beside
    ORT and scores identically; --time-to-metrics N repeats the images under fresh ids, COCOeval included."""
    import bench_eval_throughput
    import trt_double as D

    from common.core.cli import run_main

    api = D.api_under_test()
    state, _ = D.use_double(monkeypatch, api)
    monkeypatch.chdir(tmp_path)  # the engine cache goes under ./tmp
    from common.eval import timing
    from common.throughput.bench import ttm

    prewarmed: list[tuple] = []  # the shapes the bench's own warm-up (before the pairs) warms
    real_warmup, real_for_run = timing.warmup, ttm.warmup_for_run

    def recorded_warmup(backend, batch_size, size, runs, last_batch=None):
        prewarmed.append((batch_size, size, last_batch))
        return real_warmup(backend, batch_size, size, runs, last_batch)

    def recorded_for_run(*args):
        with monkeypatch.context() as m:
            m.setattr(timing, "warmup", recorded_warmup)
            return real_for_run(*args)

    monkeypatch.setattr(ttm, "warmup_for_run", recorded_for_run)
    out = tmp_path / "bench.json"
    code = run_main(
        bench_eval_throughput.main,
        [
            "--smoke",
            "--no-ultralytics",
            "--skip-sequential",
            "--trt-backend",
            api.name,
            "--time-to-metrics",
            "20",
            "--rounds",
            "3",
            "--out",
            str(out),
        ],
    )
    assert code == 0
    report = json.loads(out.read_text())
    (row,) = report["rows"]
    assert api.name in row["ours"] and not row["failed"], row["failed"]
    # three rounds, the order reversed every other round; each figure is its variant's round of median img/s
    assert row["round_order"] == [["ort-cpu", api.name], [api.name, "ort-cpu"], ["ort-cpu", api.name]]
    for res in row["ours"].values():
        assert len(res["rounds_images_per_s"]) == 3
        assert res["images_per_s"] == sorted(res["rounds_images_per_s"])[1]
    assert row["ours"][api.name]["images_per_s"] > 0 and state.executions > 0
    assert row["identical"][api.name] is True and row["ap"][api.name] == row["ap_sequential"]
    ttm = report["time_to_metrics"]
    assert ttm["images"] == 20 and ttm["distinct_images"] == 8
    assert not list(tmp_path.rglob("instances_repeated_*"))  # the repeated set's instances were temporary
    # before the pairs, the backend is warmed at the run's full and partial batch shapes (once)
    b = ttm["batch_size"]
    assert prewarmed == [(b, 640, 20 % b or None)] and ttm["prewarm_seconds"] > 0
    assert 0 < ttm["coco_eval_seconds"] < ttm["seconds"] and 0 < ttm["coco_eval_share"] < 1
    # total (COCOeval included) against the same evaluation without COCOeval, both whole evaluate() calls
    assert ttm["pipeline_only_seconds"] > 0 and ttm["ratio"] == ttm["seconds"] / ttm["pipeline_only_seconds"]
    assert ttm["pipeline_only_wall_seconds"] <= ttm["pipeline_only_seconds"]
    for phase in ttm["phases"].values():  # each call's CPU: this process ran the model; no COCO worker at 20 images
        cpu = phase["cpu_seconds"]
        assert cpu["this_process"] > 0 and cpu["child_processes"] >= 0 and cpu["coco_workers"] is None
    assert ttm["AP"] > 0.1  # each repeated image scored against its own copy of the annotations
    # three pairs by default; the reported pair is the one of median ratio
    ratios = [p["ratio"] for p in ttm["pairs"]]
    assert ttm["repeats"] == 3 and len(ratios) == 3 and ttm["ratio"] == sorted(ratios)[1]
    assert any(p["seconds"] == ttm["seconds"] for p in ttm["pairs"])
    # each call's seconds split into start (open + warm-up + loaders wait), run, COCOeval after, rest
    for name, total in (("pipeline_only", ttm["pipeline_only_seconds"]), ("with_coco", ttm["seconds"])):
        ph = ttm["phases"][name]
        st = ph["start"]
        assert st["total"] == pytest.approx(st["open"] + st["warmup"] + st["loaders_wait"])
        assert ph["rest"] >= 0 and ph["run"] > 0 and st["warmup"] > 0
        assert st["total"] + ph["run"] + ph["coco_after_last_batch"] + ph["rest"] == pytest.approx(total)
    assert ttm["phases"]["pipeline_only"]["coco_after_last_batch"] < 0.01  # no COCOeval: nothing to do
    assert ttm["phases"]["with_coco"]["coco_after_last_batch"] == ttm["coco_eval_seconds"]


def test_variant_modes_name_preprocess_post_and_decode() -> None:
    from common.core.errors import UserError
    from common.throughput.bench import modes as B

    assert B.mode_parts("cpu") == ("cpu", False, "cpu", "threads")
    assert B.mode_parts("gpu-letterbox+gpu-post") == ("gpu-letterbox", True, "cpu", "threads")
    assert B.mode_parts("gpu-letterbox+gpu-decode+gpu-post") == ("gpu-letterbox", True, "gpu", "threads")
    assert B.mode_parts("gpu-letterbox+gpu-post+procs") == ("gpu-letterbox", True, "cpu", "processes")
    assert B.eval_options("cpu+procs").loaders == "processes"
    opts = B.eval_options("gpu-letterbox+gpu-decode")
    assert (opts.preprocess, opts.decode, opts.postprocess) == ("gpu-letterbox", "gpu", "cpu")
    for bad in ("gpu-letterbox+gpu-post+gpu-post", "cpu+fast", "gpu-letterbox+"):
        with pytest.raises(UserError, match="PREPROCESS"):
            B.mode_parts(bad)


def test_a_lanes_variant_is_the_no_flag_run_on_that_many_lanes() -> None:
    from common.throughput.bench import variants as B
    from common.throughput.bench.modes import DEFAULTS_MODE

    assert B.variant_spec("eval-onnx-defaults-lanes-8") == (8, DEFAULTS_MODE, "auto")
    assert B.variant_spec("eval-onnx-defaults-sleep-wait") == (-1, DEFAULTS_MODE, "auto+sleep")
    assert B.variant_spec("eval-onnx-defaults-main-thread") == (-1, DEFAULTS_MODE, "auto+main")
    assert B.variant_spec("eval-onnx-defaults-lanes-6-main-thread") == (6, DEFAULTS_MODE, "auto+main")
    assert B.variant_spec("eval-onnx-defaults") == (-1, DEFAULTS_MODE, "auto")  # --lanes, default 3
    bad_names = ("eval-onnx-defaults-lanes-0", "eval-onnx-defaults-lanes-", "eval-onnx-defaults-lanes-x", "ort-cpu")
    for bad in (*bad_names, "eval-onnx-defaults-lanes-6-main"):
        assert B.variant_spec(bad) is None, bad


def test_variants_start_only_while_their_gpu_memory_fits() -> None:
    """Each variant counts its lanes at the first variant's measured footprint per lane, against a share of what
    was free before the first started; one that does not fit is left out with a line naming it, not started
    into an out-of-memory failure."""
    from common.throughput.bench import variants as B

    gib = 1 << 30
    plan = B.GpuMemoryPlan(free_before=80 * gib, lanes=3, free_after=74 * gib, share=0.8)  # 2 GiB a lane
    assert (plan.per_lane, plan.used, plan.budget) == (2 * gib, 6 * gib, 64 * gib)
    admitted = 0
    while plan.refuse("three-lanes", 3) is None:
        plan.take(3)
        admitted += 1
    assert admitted == 9 and plan.used == 60 * gib  # 6 + 9 x 6 GiB; a tenth would take 66 of the 64 GiB
    why = plan.refuse("eight-lanes", 8)
    assert why is not None and "16.0 GiB" in why and "--variants eight-lanes" in why and plan.used == 60 * gib
    assert plan.refuse("plain", 1) is None  # a smaller one still fits
    assert B.variant_lanes("ort-cuda-plain", 3) == 1 and B.variant_lanes("eval-onnx-defaults", 3) == 3
    assert B.variant_lanes("eval-onnx-defaults-lanes-8", 3) == 8


def test_gpu_variants_start_timed_on_a_double_and_stop_where_memory_runs_out(monkeypatch) -> None:
    """``make_backends`` on a GPU machine (ORT's lanes on the CUDA doubles): each variant's start-up is timed;
    once the first variant's footprint says the next would not fit, that one is left out with its reason."""
    from conftest import DEMO_MODEL
    from test_fast_path import _fake_gpu_machine

    from common.throughput.bench import variants as B
    from common.throughput.bench.ceiling import ResidentTiming

    _fake_gpu_machine(monkeypatch)
    gib = 1 << 30
    free = iter([10 * gib, 7 * gib])  # before / after the first variant: 3 lanes take 3 GiB, the share is 8 GiB
    # (a variant that fails to start takes nothing: the plain CUDA session below, which can't start on a CPU)
    monkeypatch.setattr(B, "gpu_free", lambda: next(free))
    compile_s = B.compile_post_kernels()  # once, before the variants: no variant's start-up holds it
    assert compile_s is not None and compile_s >= 0
    starts: dict[str, float] = {}
    wanted = ["eval-onnx-defaults-sleep-wait", "eval-onnx-defaults-lanes-4"]
    out, failed = B.make_backends(DEMO_MODEL, 1, True, 3, wanted, starts)
    try:
        # 3 + 3 GiB fit in 8; 4 more lanes (4 GiB) do not; a plain CUDA session can't start on this CPU
        assert list(out) == ["eval-onnx-defaults", "eval-onnx-defaults-sleep-wait"]
        assert "not started" not in failed["ort-cuda-plain"]
        assert "--variants eval-onnx-defaults-lanes-4" in failed["eval-onnx-defaults-lanes-4"]
        assert set(starts) == set(out) and all(s > 0 for s in starts.values())
        assert out["eval-onnx-defaults-sleep-wait"][0].metadata()["lane_wait"] == "sleep"
        assert out["eval-onnx-defaults"][0].metadata()["lane_wait"] == "spin"
        # the lanes time inference alone for the ceiling (serial and overlapped)
        assert isinstance(out["eval-onnx-defaults"][0], ResidentTiming)
    finally:
        for backend, _ in out.values():
            backend.close()


def test_decode_bench_smoke(tmp_path) -> None:
    """--decode-bench on this machine: OpenCV threads vs nvImageCodec's CPU backend, whose pixels are OpenCV's."""
    pytest.importorskip("nvidia.nvimgcodec", reason="nvImageCodec not installed (extra gpu-decode)")
    out = tmp_path / "d.json"
    res = run_script(
        "bench_eval_throughput.py",
        "--smoke",
        "--decode-bench",
        "--batch-sizes",
        "4",
        "--min-seconds",
        "0.2",
        "--out",
        str(out),
    )
    assert res.returncode == 0, res.stderr[-2000:]
    rep = json.loads(out.read_text())
    dec = rep["decode"]
    assert rep["mode"] == "decode" and dec["files"] == 8 and dec["opencv"]["images_per_s"] > 0
    assert dec["nvimgcodec"]["4"]["images_per_s"] > 0 and dec["nvimgcodec"]["4"]["backend"] == "cpu"
    assert dec["pixels"]["max_abs_diff"] == 0 and dec["pixels"]["images"] == 8
    assert "OpenCV, 2 threads" in res.stdout


def test_coco_bench_times_the_engines_and_compares_their_stats(tmp_path, capsys) -> None:
    """--coco-bench N: no model; every engine on the same synthetic detections, stats against pycocotools'."""
    import bench_eval_throughput

    from common.core.cli import run_main

    out = tmp_path / "coco.json"
    out_args = ["--coco-bench-pace", "4000", "--out", str(out)]
    args = [
        "--coco-bench",
        "24",
        "--batch-sizes",
        "8",
        "--instances",
        str(MINI / "annotations" / "instances_val2017.json"),
    ]
    code = run_main(
        bench_eval_throughput.main,
        [
            *args,
            "--coco-bench-engines",
            "stream",
            "stream-process",
            "pycocotools",
            "--coco-bench-workers",
            "2",
            *out_args,
        ],
    )
    assert code == 0
    report = json.loads(out.read_text())
    assert report["mode"] == "coco-bench" and report["images"] == 24 and report["detections"] == 24 * 300
    stream, ref = report["engines"]["stream"], report["engines"]["pycocotools"]
    assert stream["equals_pycocotools"] is True and stream["stats"] == ref["stats"]
    assert 0 < stream["after_last_batch_s"] <= stream["total_s"] and ref["after_last_batch_vs_pycocotools_total"] == 1.0
    sent = report["engines"]["stream-process"]
    assert sent["equals_pycocotools"] is True and sent["stats"] == ref["stats"] and sent["feed_s_per_batch"] >= 0
    assert sent["workers"] == 2 and sent["worker_accumulate_s"] > 0  # two processes shared the categories
    assert report["pace_images_per_s"] == 4000 and sent["send_loop_s"] >= 24 / 4000  # batches at a pipeline's rate
    assert "stream" in capsys.readouterr().out
    assert run_main(bench_eval_throughput.main, ["--coco-bench", "-1", "--out", str(tmp_path / "x.json")]) == 2


def test_coco_bench_replaces_its_own_json_and_refuses_anothers_unless_forced(tmp_path, capsys) -> None:
    import bench_eval_throughput

    from common.core.cli import run_main

    out = tmp_path / "coco.json"
    argv = ["--coco-bench", "4", "--coco-bench-engines", "stream", "--out", str(out)]
    argv += ["--instances", str(MINI / "annotations" / "instances_val2017.json")]
    assert run_main(bench_eval_throughput.main, argv) == 0
    assert run_main(bench_eval_throughput.main, argv) == 0  # its own JSON: replaced
    out.write_text('{"the user": "notes"}')
    assert run_main(bench_eval_throughput.main, argv) == 2
    assert "--force" in capsys.readouterr().err and json.loads(out.read_text()) == {"the user": "notes"}
    assert run_main(bench_eval_throughput.main, [*argv, "--force"]) == 0
    assert json.loads(out.read_text())["mode"] == "coco-bench"


def _jittered_results(instances: Path, seed: int) -> list[dict]:
    """COCO results for an instances file's images: each annotation's box, jittered, a few times, some in another
    category, with random scores."""
    rng = np.random.default_rng(seed)
    data = json.loads(instances.read_text())
    cats = [c["id"] for c in data["categories"]]
    out = []
    for a in data["annotations"]:
        for _ in range(int(rng.integers(1, 4))):
            box = np.asarray(a["bbox"], float) + rng.normal(0, 0.1, 4) * np.asarray(a["bbox"], float)[[2, 3, 2, 3]]
            cat = a["category_id"] if rng.random() < 0.8 else int(rng.choice(cats))
            out.append(
                {"image_id": a["image_id"], "category_id": cat, "bbox": box.round(2).tolist(), "score": rng.random()}
            )
    return out


def test_coco_bench_on_given_detections_repeats_them_with_their_images(tmp_path) -> None:
    """--coco-bench-detections: each of the N images gets the given detections of the image it repeats; the
    streamed engines' stats equal pycocotools' on them."""
    import bench_eval_throughput

    from common.core.cli import run_main

    instances = MINI / "annotations" / "instances_val2017.json"
    results = _jittered_results(instances, 3)
    given = tmp_path / "detections.json"
    given.write_text(json.dumps(results))
    out = tmp_path / "coco.json"
    args = ["--coco-bench", "30", "--batch-sizes", "4", "--instances", str(instances), "--out", str(out)]
    engines = ["--coco-bench-engines", "stream", "stream-process", "pycocotools"]
    assert run_main(bench_eval_throughput.main, [*args, *engines, "--coco-bench-detections", str(given)]) == 0
    report = json.loads(out.read_text())
    src = sorted(i["id"] for i in json.loads(instances.read_text())["images"])
    per_image = {i: sum(r["image_id"] == i for r in results) for i in src}
    assert report["detections"] == sum(per_image[src[k % len(src)]] for k in range(30))
    assert report["detections_from"] == "given" and report["detections_file"] == str(given)
    ref = report["engines"]["pycocotools"]["stats"]
    for engine in ("stream", "stream-process"):
        assert report["engines"][engine]["equals_pycocotools"] is True and report["engines"][engine]["stats"] == ref


def test_coco_bench_refuses_detections_of_other_images_before_any_work(tmp_path, capsys) -> None:
    import bench_eval_throughput

    from common.core.cli import run_main

    instances = MINI / "annotations" / "instances_val2017.json"
    other = tmp_path / "other.json"
    other.write_text(json.dumps([{"image_id": 987654321, "category_id": 1, "bbox": [1, 1, 5, 5], "score": 0.5}]))
    out = tmp_path / "coco.json"
    args = ["--coco-bench", "30", "--instances", str(instances), "--out", str(out), "--coco-bench-detections"]
    assert run_main(bench_eval_throughput.main, [*args, str(other)]) == 2
    assert "none of its 1 detections is of an image of" in capsys.readouterr().err
    assert run_main(bench_eval_throughput.main, [*args, str(tmp_path / "missing.json")]) == 2
    assert "--coco-bench-detections" in capsys.readouterr().err and not out.exists()
    other.write_text(json.dumps([{"image_id": 1, "category_id": 1, "bbox": [1, 1, 5], "score": 0.5}]))
    assert run_main(bench_eval_throughput.main, [*args, str(other)]) == 2
    err = capsys.readouterr().err
    assert "a detection is not image_id, category_id, bbox" in err and len(err.strip().splitlines()) == 1


class _LaneStub:
    """A lane backend as the ceiling sees it: ``serial_ms`` per synchronous resident run on one session,
    ``overlap_ips`` images/s with every lane running at once."""

    def __init__(self, serial_ms: float, overlap_ips: float, lanes: int = 3, threads: str = "per-lane") -> None:
        self.serial_ms, self.overlap_ips, self.lanes, self.asked = serial_ms, overlap_ips, lanes, []
        self.threads = threads

    def resident_run_ms(self, iterations: int, batch: int = 1, warmup: int = 10) -> list[float]:
        return [self.serial_ms] * iterations

    def resident_overlap_images_per_s(self, iterations: int, batch: int = 1, warmup: int = 10) -> float:
        self.asked.append((iterations, batch, warmup))
        return self.overlap_ips

    def metadata(self) -> dict:
        return {"lanes": self.lanes, "lane_threads": self.threads}


@pytest.mark.parametrize(("serial_ms", "overlap_ips", "best"), [(2.0, 700.0, "overlap"), (2.0, 400.0, "serial")])
def test_the_ceiling_is_the_best_configuration_we_can_run(serial_ms, overlap_ips, best) -> None:
    """Serial (one session, 500 img/s at 2 ms per image) and overlapped (every lane at once): the ceiling is
    the faster one and says which; the table marks it and measures every variant against it."""
    from common.throughput.bench.ceiling import ceiling
    from common.throughput.bench.table import ceiling_lines

    stub = _LaneStub(serial_ms, overlap_ips)
    c = ceiling(stub, 1, 640, 0.01)
    assert c["best"] == best and c["serial"]["images_per_s"] == pytest.approx(500.0)
    assert c["overlap"]["images_per_s"] == overlap_ips and c["overlap"]["lanes"] == 3
    assert c["images_per_s"] == pytest.approx(max(500.0, overlap_ips))
    lines = ceiling_lines(1, c, None)
    (marked,) = [line for line in lines if "= ceiling" in line]
    assert ("overlapped" if best == "overlap" else "serial") in marked and len(lines) == 2
    assert all(iters >= 20 for iters, _, _ in stub.asked)


def test_the_ceiling_is_the_best_lane_count_a_variant_runs() -> None:
    """A variant on more lanes than the first one: its lanes' overlapped figure is measured too, and the ceiling
    is the best of every configuration (here the 6-lane one), each shown on a line of its own."""
    from common.throughput.bench.ceiling import ceiling
    from common.throughput.bench.table import ceiling_lines

    three, six = _LaneStub(2.0, 700.0), _LaneStub(2.0, 900.0, lanes=6)
    c = ceiling(three, 1, 640, 0.01, [six])
    assert c["best"] == "overlap" and c["images_per_s"] == 900.0 and c["overlap"]["lanes"] == 6
    assert {k: v["images_per_s"] for k, v in c["overlap_by_lanes"].items()} == {"3": 700.0, "6": 900.0}
    lines = ceiling_lines(1, c, None)
    (marked,) = [line for line in lines if "= ceiling" in line]
    assert len(lines) == 3 and "overlapped, 6 lanes" in marked


def test_lanes_driven_by_one_thread_give_no_overlapped_ceiling() -> None:
    """A ``--lane-threads main`` variant runs its lanes' resident runs one after the other: its lane count is
    measured only through a variant with a thread per lane."""
    from common.throughput.bench.ceiling import ceiling

    main6, three = _LaneStub(2.0, 400.0, lanes=6, threads="main"), _LaneStub(2.0, 700.0)
    c = ceiling(main6, 1, 640, 0.01, [three])
    assert list(c["overlap_by_lanes"]) == ["3"] and c["images_per_s"] == 700.0 and not main6.asked


def test_the_ceiling_of_a_backend_without_lanes_is_its_serial_runs() -> None:
    from common.throughput.bench.ceiling import ceiling

    class Plain:
        input = None

        def infer(self, x):
            return [x]

    c = ceiling(Plain(), 1, 32, 0.01)
    assert c["best"] == "serial" and c["overlap"] is None and c["images_per_s"] == c["serial"]["images_per_s"]


def test_rounds_keep_the_median_round_and_drop_a_variant_that_fails() -> None:
    """``time_in_rounds``: a variant that fails in a round is reported in ``failed`` and not run again; an even
    number of rounds keeps the lower of the middle two."""
    from common.throughput.bench import runs as bench

    calls: list[str] = []
    figures = {"a": iter([30.0, 10.0, 20.0, 40.0]), "b": iter([5.0])}

    def run(name: str, n: int) -> dict:
        calls.append(name)
        if name == "b" and len([c for c in calls if c == "b"]) == 2:
            raise RuntimeError("lane died")
        return {"images_per_s": next(figures[name]), "seconds": 10.0}

    failed: dict[str, str] = {}
    got, order = bench.time_in_rounds(["a", "b"], run, 4, 100, 1.0, failed)
    assert order == [["a", "b"], ["b", "a"], ["a"], ["a"]] and failed == {"b": "RuntimeError: lane died"}
    assert list(got) == ["a"] and got["a"]["rounds_images_per_s"] == [30.0, 10.0, 20.0, 40.0]
    assert got["a"]["images_per_s"] == 20.0


def test_provider_options_reach_every_session_of_the_gpu_variants(monkeypatch) -> None:
    """``--provider-option`` CUDA EP options go to each lane's session (beside the lane's own stream) and to
    the plain CUDA session; with none given the sessions get only the lanes' own options."""
    from conftest import DEMO_MODEL
    from test_fast_path import _fake_gpu_machine

    from common.throughput import ort_lanes
    from common.throughput.bench import variants as B

    _fake_gpu_machine(monkeypatch)
    lane_session, seen = ort_lanes.OrtBackend, []

    def spy(path, providers, options, **kwargs):
        seen.append(dict(options[B.CUDA_EP]))
        return lane_session(path, providers, options, **kwargs)

    monkeypatch.setattr(ort_lanes, "OrtBackend", spy)
    heuristic = {"cudnn_conv_algo_search": "HEURISTIC"}
    for opts, want in ((heuristic, "HEURISTIC"), (None, None)):
        seen.clear()
        backend, _ = B.make_variant(DEMO_MODEL, "eval-onnx-defaults", 1, 2, opts)
        backend.close()
        assert len(seen) == 2 and all(o.get("cudnn_conv_algo_search") == want for o in seen)
        assert len({o["user_compute_stream"] for o in seen}) == 2  # each lane still on its own stream

    plain = []
    monkeypatch.setattr(B, "OrtBackend", lambda path, providers, options, **kw: plain.append(options) or object())
    B.make_variant(DEMO_MODEL, "ort-cuda-plain", 1, 1, heuristic)
    assert plain == [{B.CUDA_EP: heuristic}]


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--provider-option", "cudnn_conv_algo_search=HEURISTIC"], "expected EP:KEY=VALUE"),
        (
            ["--provider-option", "TensorrtExecutionProvider:trt_fp16_enable=1"],
            "not in the providers the GPU variants run on",
        ),
        (["--provider-option", "CUDAExecutionProvider:cudnn_conv_algo_search=HEURISTIC", "--cpu"], "this run has none"),
        (["--provider-option", "CUDAExecutionProvider:x=1", "--coco-bench", "10"], "drop it with --coco-bench"),
    ],
)
def test_a_provider_option_the_run_cannot_use_is_refused_before_any_work(tmp_path, flags, says) -> None:
    import bench_eval_throughput as B
    from conftest import DEMO_MODEL

    from common.core.errors import UserError

    out = tmp_path / "bench.json"
    with pytest.raises(UserError, match=says):
        B.main(["--onnx-path", str(DEMO_MODEL), "--data-root", str(MINI), "--out", str(out), *flags])
    assert not out.exists()


def _post_fixtures(root: Path, images: int) -> Path:
    """A fixtures tree for bench_gpu_postprocess.py: the bundled model as models/yolov10n-synth.onnx and the
    bundled set's first images as synthcoco/valA."""
    import shutil

    from conftest import DEMO_MODEL

    (root / "models").mkdir(parents=True)
    shutil.copy(DEMO_MODEL, root / "models" / "yolov10n-synth.onnx")
    (root / "synthcoco" / "valA").mkdir(parents=True)
    for jpg in sorted((MINI / "val2017").glob("*.jpg"))[:images]:
        shutil.copy(jpg, root / "synthcoco" / "valA" / jpg.name)
    return root


def test_gpu_postprocess_bench_on_the_doubles_and_its_outputs(tmp_path, monkeypatch, capsys) -> None:
    """bench_gpu_postprocess.py on the CUDA and kernel doubles: every image's GPU detections equal NumPy's
    (the double runs the kernels' NumPy emulation), a row per batch size, the table and the stamped JSON in
    --out; run again into the same folder it replaces its own files, and a file it did not write is refused
    before any work unless --force."""
    import bench_gpu_postprocess as script
    import trt_double as D
    from post_double import FakePostprocessKernels

    from common.core.cli import run_main
    from common.core.results import written_by_us
    from common.gpu import cuda_mem
    from common.throughput import gpu_postprocess

    mem = D.FakeCudaMemory()
    monkeypatch.setattr(cuda_mem, "CudaMemory", lambda device: mem)
    monkeypatch.setattr(gpu_postprocess, "postprocess_kernels", lambda device: FakePostprocessKernels(mem))
    fixtures, out = _post_fixtures(tmp_path / "fx", 2), tmp_path / "out"
    argv = ["--fixtures", str(fixtures), "--models", "yolov10n-synth", "--images", "2", "--batch-sizes", "1", "3"]
    argv += ["--runs", "2", "--numpy-runs", "1", "--warmup-runs", "1", "--out", str(out)]
    assert run_main(script.main, argv) == 0
    report = json.loads((out / script.JSON_NAME).read_text())
    assert [(r["batch"], r["images"]) for r in report["rows"]] == [(1, 1), (3, 3)]
    assert all(r["identical_images"] == r["images"] and r["detections"] > 0 for r in report["rows"])
    assert all(r["gpu_events"]["count"] == 2 and r["numpy"]["count"] == 1 for r in report["rows"])
    assert written_by_us(out / script.JSON_NAME) and written_by_us(out / script.TEXT_NAME, [out / script.JSON_NAME])
    assert "3/3" in (out / script.TEXT_NAME).read_text() and "3/3" in capsys.readouterr().out
    assert not mem.live  # every buffer freed
    assert run_main(script.main, argv) == 0  # its own files: replaced
    (out / script.TEXT_NAME).write_text("the user's notes\n")
    assert run_main(script.main, argv) == 2
    assert "--out table" in capsys.readouterr().err
    assert (out / script.TEXT_NAME).read_text() == "the user's notes\n"
    assert run_main(script.main, [*argv, "--force"]) == 0
