"""Issue 12: the bad-input matrix over every CLI, the data-loss rules, and valid-but-unusual inputs.

Every bad case runs the CLI in-process through ``common.core.cli.run_main(main, argv)`` (the same
entry the scripts' ``__main__`` uses) with the working directory set to the case's own folder,
and asserts:

- exit code 2;
- exactly one line on stderr, ``error: ...``, naming the flag or file of the case;
- no traceback (``--verbose`` is never passed here; one subprocess case checks it shows one);
- nothing left behind: every file under the sandbox and the case folder is hashed before and
  after (so no output, temporary or run folder appears, and every input stays byte-identical).

Logging: pytest puts its own handlers on the root logger, which would keep ``setup_logging``
from attaching a stderr handler; ``_run`` clears them around the call so that log lines reach
the captured stderr exactly as in a real run.

``_print_matrix`` (``pytest -s -k matrix_table``) prints the table of case, rc, message.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pytest
import trt_double as D
from conftest import fixture_path

from common.core.cli import run_main

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts" / "cv-models"
MINI = REPO / "datasets" / "synthcoco-mini"
DEMO_MODEL = REPO / "models" / "cv-models" / "yolov10n-synth" / "yolov10n-synth.onnx"

# ----------------------------------------------------------------------------- sandbox


def _tiny_onnx(path: Path, elem: int, channels: int, hw: tuple[int | str, int | str] = (640, 640)) -> Path:
    """A one-input ONNX [1,C,H,W] of element type ``elem`` (Identity): enough for the input checks."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("images", elem, [1, channels, *hw])
    y = helper.make_tensor_value_info("out", elem, [1, channels, *hw])
    graph = helper.make_graph([helper.make_node("Identity", ["images"], ["out"])], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    assert TensorProto.FLOAT  # keep the import used
    return path


def _metrics(path: Path, map_value: float | None = 0.25, backend: str = "onnxruntime") -> Path:
    """A metrics.json of the schema the evaluators write (the keys compare_runs.py reads)."""
    from common.core.results import METRICS_SCHEMA_VERSION

    payload = {
        "schema_version": METRICS_SCHEMA_VERSION,
        "model_path": "m.onnx",
        "metrics": {"mAP_50_95": map_value, "mAP_50": 0.4, "num_images": 2, "num_detections": 3},
        "image_ids": [1, 2],
        "latency": {"median_ms": 1.0, "p99_ms": 2.0, "throughput_fps": 900.0},
        "run": {"backend": {"backend": backend, "providers_used": ["CPUExecutionProvider"]}},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload))
    return path


def _variant(src: Path, dst: Path, extra: str | None = None, imgsz: str | None = None, dynamic: bool = False) -> Path:
    """The demo model with an extra output put first (``extra``: ``input`` -> an [1,3,640,640] copy of the input,
    ``head`` -> a second copy of the detection head), its metadata ``imgsz`` replaced, or its input H/W dynamic."""
    import onnx
    from onnx import helper

    model = onnx.load(str(src))
    g = model.graph
    if extra is not None:
        source = g.input[0] if extra == "input" else g.output[0]
        name = f"extra_{extra}"
        g.node.append(helper.make_node("Identity", [source.name], [name]))
        vi = onnx.ValueInfoProto()
        vi.CopyFrom(source)
        vi.name = name
        g.output.insert(0, vi)
    if imgsz is not None:
        for p in model.metadata_props:
            if p.key == "imgsz":
                p.value = imgsz
    if dynamic:
        for d, sym in zip(g.input[0].type.tensor_type.shape.dim[2:], ("height", "width"), strict=True):
            d.dim_param = sym
    onnx.save(model, str(dst))
    return dst


@dataclass
class Sandbox:
    root: Path
    model: Path
    instances: Path
    images: Path
    data_root: Path
    tiny: Path
    engine: Path
    u8_model: Path
    i8_model: Path
    gray_model: Path
    dynamic_model: Path
    metrics: Path
    ids3: Path
    bad_instances: dict[str, Path] = field(default_factory=dict)
    variants: dict[str, Path] = field(default_factory=dict)


@pytest.fixture(scope="module")
def sb(tmp_path_factory) -> Sandbox:
    if not DEMO_MODEL.is_file() or not MINI.is_dir():
        pytest.skip("needs the bundled demo model and datasets/synthcoco-mini")
    root = tmp_path_factory.mktemp("sandbox")
    data_root = root / "mini"
    shutil.copytree(MINI, data_root)
    model = root / "m.onnx"
    shutil.copyfile(DEMO_MODEL, model)
    inst = data_root / "annotations" / "instances_val2017.json"
    good = json.loads(inst.read_text())
    bad: dict[str, Path] = {}

    def write(name: str, obj: object | str) -> None:
        p = root / "bad-instances" / f"{name}.json"
        p.parent.mkdir(exist_ok=True)
        p.write_text(obj if isinstance(obj, str) else json.dumps(obj))
        bad[name] = p

    write("no-categories", {k: v for k, v in good.items() if k != "categories"})
    write("list-top-level", good["annotations"][:3])
    write("string-image-ids", {**good, "images": [{**im, "id": str(im["id"])} for im in good["images"]]})
    no_name = [{k: v for k, v in im.items() if k != "file_name"} for im in good["images"]]
    write("no-file-name", {**good, "images": no_name})
    write("no-annotations", {**good, "annotations": []})
    write("unknown-category-id", {**good, "annotations": [{**good["annotations"][0], "category_id": 99999}]})
    write("not-json", "{ this is not json")
    write("no-coco80-names", {**good, "categories": [{**c, "name": f"thing{c['id']}"} for c in good["categories"]]})
    ids3 = root / "ids3.txt"
    ids3.write_text("3\n1\n2\n")
    engine = root / "fake.engine"
    engine.write_bytes(b"not really an engine")
    return Sandbox(
        root=root,
        model=model,
        instances=inst,
        images=data_root / "val2017",
        data_root=data_root,
        tiny=D.tiny_model(root / "tiny.onnx"),
        engine=engine,
        u8_model=_tiny_onnx(root / "u8.onnx", 2, 3),  # TensorProto.UINT8
        i8_model=_tiny_onnx(root / "i8.onnx", 3, 3),  # TensorProto.INT8
        gray_model=_tiny_onnx(root / "gray.onnx", 1, 1),  # float32, 1 channel
        dynamic_model=_tiny_onnx(root / "dyn.onnx", 1, 3, ("H", "W")),  # float32, dynamic H and W
        metrics=_metrics(root / "runs" / "a" / "metrics.json"),
        ids3=ids3,
        bad_instances=bad,
        variants={
            "input-first": _variant(model, root / "input-first.onnx", extra="input"),
            "two-heads": _variant(model, root / "two-heads.onnx", extra="head"),
            "dyn-640": _variant(model, root / "dyn-640.onnx", dynamic=True),
            "dyn-320": _variant(model, root / "dyn-320.onnx", imgsz="[320, 320]", dynamic=True),
        },
    )


def _snapshot(*roots: Path) -> dict[str, str]:
    """sha256 of every file (and the set of folders) below ``roots``."""
    out: dict[str, str] = {}
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            for d in dirnames:
                out[os.path.join(dirpath, d) + "/"] = "dir"
            for f in filenames:
                p = os.path.join(dirpath, f)
                with open(p, "rb") as fh:
                    out[p] = hashlib.sha256(fh.read()).hexdigest()
    return out


@contextlib.contextmanager
def _plain_logging() -> Iterator[None]:
    """Let setup_logging attach its stderr handler as in a real run (pytest's handlers set aside)."""
    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    root.handlers = []
    try:
        yield
    finally:
        for h in root.handlers:
            h.close()
        root.handlers = saved
        root.setLevel(level)


def _main_of(script: str) -> Callable:
    return importlib.import_module(script).main  # scripts/cv-models and scripts/trt are on pytest's pythonpath


def _run(script: str, argv: list[str], capsys) -> tuple[int, str, str]:
    main = _main_of(script)
    capsys.readouterr()
    with _plain_logging():
        try:
            rc = run_main(main, argv)
        except SystemExit as exc:  # argparse (--help, usage errors) exits from inside main
            rc = exc.code if isinstance(exc.code, int) else 2
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


# ----------------------------------------------------------------------------- the cases

EVAL = "eval_yolov10m_onnx_coco"
EVAL_TRT = "eval_yolov10m_trt_coco"
BUILD = "build_trt_engine"
INFER = "infer_trt_engine"
CALIB = "make_calib_npy"
QUANT = "quantize_onnx"
VALIDATE = "validate_e2e"
COMPARE = "compare_runs"
DOCTOR = "trt_doctor"
SETUP = "setup_tensorrt"


def _eval(s: Sandbox, t: Path, *extra: str, model: Path | None = None) -> list[str]:
    return [
        "--onnx-path",
        str(model or s.model),
        "--providers",
        "CPUExecutionProvider",
        "--data-root",
        str(s.data_root),
        "--max-images",
        "2",
        "--workers",
        "0",
        "--no-progress",
        "--out",
        str(t / "m.json"),
        *extra,
    ]


def _eval_inst(s: Sandbox, t: Path, name: str) -> list[str]:
    return [*_eval(s, t), "--instances", str(s.bad_instances[name])]


def _eval_trt(s: Sandbox, t: Path, *extra: str) -> list[str]:
    return ["--backend", "tensorrt-rtx", "--data-root", str(s.data_root), "--max-images", "2", "--no-progress", *extra]


def _build(s: Sandbox, t: Path, *extra: str) -> list[str]:
    return ["--onnx-path", str(s.tiny), "--backend", "tensorrt-rtx", "--trt-verbosity", "error", *extra]


def _infer(s: Sandbox, t: Path, *extra: str) -> list[str]:
    return ["--engine-path", str(s.engine), "--trt-api", "tensorrt-rtx", "--out", str(t / "out"), *extra]


def _calib(s: Sandbox, t: Path, *extra: str) -> list[str]:
    return ["--images-dir", str(s.images), "--max-images", "2", "--imgsz", "64", "--no-progress", *extra]


def _quant(s: Sandbox, t: Path, *extra: str) -> list[str]:
    return ["--mode", "fp16", "--onnx-path", str(s.tiny), *extra]


def _validate(s: Sandbox, t: Path, *extra: str) -> list[str]:
    return [
        "--onnx-path",
        str(s.model),
        "--data-root",
        str(s.data_root),
        "--backends",
        "ort-cpu",
        "--max-images",
        "2",
        "--out",
        str(t / "runs"),
        *extra,
    ]


def _compare(s: Sandbox, t: Path, *extra: str) -> list[str]:
    return [str(s.metrics), "--out", str(t / "cmp"), *extra]


def _foreign_beside(p: Path, suffix: str) -> str:
    """``p`` as an argument, with a file of someone else's where its ``suffix`` companion goes."""
    _file(p.with_name(p.name + suffix), "{}")
    return str(p)


def _copy(src: Path, dst: Path) -> Path:
    shutil.copyfile(src, dst)
    return dst


def _mkdir(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


def _file(p: Path, text: str = "x") -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    return p


# ----------------------------------------------------------------------------- defective data sets

Edit = Callable[[dict, Path], None]


def _set(s: Sandbox, t: Path, edit: Edit) -> list[str]:
    """``--instances`` / ``--images-dir`` of a copy of the sandbox set's first 2 images, after ``edit``
    (on the parsed JSON and the image folder) made it defective."""
    data = json.loads(s.instances.read_text())
    keep = sorted(im["id"] for im in data["images"])[:2]
    images = t / "set" / "img"
    images.mkdir(parents=True)
    data["images"] = [im for im in data["images"] if im["id"] in keep]
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] in keep]
    for im in data["images"]:
        shutil.copyfile(s.images / im["file_name"], images / im["file_name"])
    edit(data, images)
    inst = t / "set" / "instances.json"
    inst.write_text(json.dumps(data))
    return ["--instances", str(inst), "--images-dir", str(images)]


def _anns(data: dict, image_id: int | None = None) -> list[dict]:
    return [a for a in data["annotations"] if image_id is None or a["image_id"] == image_id]


def _ids_restart(data: dict, _: Path) -> None:
    for im in data["images"]:
        for k, a in enumerate(_anns(data, im["id"]), 1):
            a["id"] = k


def _set_first(key: str, value: object) -> Edit:
    def edit(data: dict, _: Path) -> None:
        data["annotations"][0][key] = value

    return edit


def _set_all(key: str, value: object) -> Edit:
    def edit(data: dict, _: Path) -> None:
        for a in data["annotations"]:
            a[key] = value

    return edit


def _drop_all(*keys: str) -> Edit:
    def edit(data: dict, _: Path) -> None:
        for a in data["annotations"]:
            for k in keys:
                a.pop(k, None)

    return edit


def _box(index: int, value: float) -> Edit:
    def edit(data: dict, _: Path) -> None:
        data["annotations"][0]["bbox"][index] = value

    return edit


def _image_file(data: dict, folder: Path, n: int) -> Path:
    return folder / sorted(data["images"], key=lambda im: im["id"])[n]["file_name"]


def _downscale(data: dict, folder: Path) -> None:
    p = _image_file(data, folder, 0)
    img = cv2.imread(str(p))
    cv2.imwrite(str(p), cv2.resize(img, (img.shape[1] // 2, img.shape[0] // 2)))


def _exif(orientation: int) -> Edit:
    def edit(data: dict, folder: Path) -> None:
        from test_dataset_check import jpeg_with_orientation

        p = _image_file(data, folder, 0)  # 1280x320: a 90-degree turn changes its size
        p.write_bytes(jpeg_with_orientation(cv2.imread(str(p)), orientation))

    return edit


def _damage_image(how: str) -> Edit:
    def edit(data: dict, folder: Path) -> None:
        p = _image_file(data, folder, 1)
        if how == "missing":
            p.unlink()
        elif how == "truncated":
            p.write_bytes(p.read_bytes()[:-2])
        elif how == "empty":
            p.write_bytes(b"")
        elif how == "folder":
            p.unlink()
            p.mkdir()

    return edit


def _dup_image(new_id: int | None) -> Edit:
    def edit(data: dict, _: Path) -> None:
        first = min(data["images"], key=lambda im: im["id"])
        data["images"].append({**first, "id": first["id"] if new_id is None else new_id})

    return edit


def _dup_category(same: str) -> Edit:
    def edit(data: dict, _: Path) -> None:
        c = data["categories"][0]
        twin = {"id": c["id"] if same == "id" else 990, "name": c["name"] if same == "name" else "x"}
        data["categories"].append(twin)

    return edit


def _nan_box(data: dict, _: Path) -> None:
    data["annotations"][0]["bbox"][2] = float("nan")  # json.dumps writes NaN, which json.loads reads back


def _outside(data: dict, _: Path) -> None:
    a = data["annotations"][0]
    im = next(im for im in data["images"] if im["id"] == a["image_id"])
    a["bbox"] = [im["width"] + 5.0, 1.0, 10.0, 10.0]


def _ds(s: Sandbox, t: Path, edit: Edit, *extra: str) -> list[str]:
    return [*_eval(s, t, *extra), *_set(s, t, edit)]


@dataclass(frozen=True)
class Case:
    id: str
    script: str
    argv: Callable[[Sandbox, Path], list[str]]
    expect: str  # a flag or file named in the one-line message
    needs_trt: bool = False


C = Case
UNWRITABLE = "/proc/i12-no-such-dir"  # not writable even by root

# fmt: off
CASES: list[Case] = [
    # --- eval (ONNX Runtime): data loss
    C("eval-out-is-model", EVAL, lambda s, t: _eval(s, t, "--out", str(s.model)), "--out"),
    C("eval-out-is-instances", EVAL, lambda s, t: _eval(s, t, "--out", str(s.instances)), "--out"),
    C("eval-detections-is-model", EVAL, lambda s, t: _eval(s, t, "--detections-out", str(s.model)),
      "--detections-out"),
    C("eval-out-equals-detections", EVAL, lambda s, t: _eval(s, t, "--detections-out", str(t / "m.json")),
      "--detections-out"),
    C("eval-out-is-directory", EVAL, lambda s, t: _eval(s, t, "--out", str(_mkdir(t / "d"))), "existing directory"),
    C("eval-out-parent-is-file", EVAL, lambda s, t: _eval(s, t, "--out", str(_file(t / "f.txt") / "m.json")),
      "--out"),
    C("eval-out-unwritable", EVAL, lambda s, t: _eval(s, t, "--out", f"{UNWRITABLE}/m.json"), "not writable"),
    C("eval-out-is-an-image", EVAL, lambda s, t: _eval(s, t, "--out", str(s.images / "000000000001.jpg")),
      "--images-dir"),
    C("eval-out-is-id-list", EVAL, lambda s, t: _eval(s, t, "--image-ids-list", str(s.ids3), "--max-images", "0",
                                                       "--out", str(s.ids3)), "--image-ids-list"),
    # --- eval: ranges
    C("eval-conf-negative", EVAL, lambda s, t: _eval(s, t, "--conf", "-0.1"), "--conf"),
    C("eval-conf-2", EVAL, lambda s, t: _eval(s, t, "--conf", "2"), "--conf"),
    C("eval-conf-nan", EVAL, lambda s, t: _eval(s, t, "--conf", "nan"), "--conf"),
    C("eval-conf-inf", EVAL, lambda s, t: _eval(s, t, "--conf", "inf"), "--conf"),
    C("eval-conf-not-a-number", EVAL, lambda s, t: _eval(s, t, "--conf", "abc"), "--conf"),
    C("eval-iou-0", EVAL, lambda s, t: _eval(s, t, "--iou", "0"), "--iou"),
    C("eval-iou-1.5", EVAL, lambda s, t: _eval(s, t, "--iou", "1.5"), "--iou"),
    C("eval-iou-nan", EVAL, lambda s, t: _eval(s, t, "--iou", "nan"), "--iou"),
    C("eval-max-det-0", EVAL, lambda s, t: _eval(s, t, "--max-det", "0"), "--max-det"),
    C("eval-max-det-negative", EVAL, lambda s, t: _eval(s, t, "--max-det", "-5"), "--max-det"),
    C("eval-pre-nms-topk-0", EVAL, lambda s, t: _eval(s, t, "--pre-nms-topk", "0"), "--pre-nms-topk"),
    C("eval-pre-nms-topk-negative", EVAL, lambda s, t: _eval(s, t, "--pre-nms-topk", "-1"), "--pre-nms-topk"),
    C("eval-imgsz-0", EVAL, lambda s, t: _eval(s, t, "--imgsz", "0"), "--imgsz"),
    C("eval-imgsz-negative", EVAL, lambda s, t: _eval(s, t, "--imgsz", "-32"), "--imgsz"),
    C("eval-imgsz-33", EVAL, lambda s, t: _eval(s, t, "--imgsz", "33"), "--imgsz"),
    C("eval-imgsz-not-model-size", EVAL, lambda s, t: _eval(s, t, "--imgsz", "320"), "--imgsz"),
    C("eval-batch-size-0", EVAL, lambda s, t: _eval(s, t, "--batch-size", "0"), "--batch-size"),
    C("eval-workers-negative", EVAL, lambda s, t: _eval(s, t, "--workers", "-1"), "--workers"),
    C("eval-unknown-flag", EVAL, lambda s, t: _eval(s, t, "--confidence", "0.5"), "--confidence"),
    C("eval-provider-option-malformed", EVAL, lambda s, t: _eval(s, t, "--provider-option", "nonsense"),
      "--provider-option"),
    # --- eval: image selection
    C("eval-max-images-cuts-id-list", EVAL, lambda s, t: _eval(s, t, "--image-ids-list", str(s.ids3)),
      "--max-images"),
    C("eval-id-list-missing", EVAL, lambda s, t: _eval(s, t, "--image-ids-list", str(t / "nope.txt")),
      "--image-ids-list"),
    C("eval-id-list-not-integers", EVAL,
      lambda s, t: _eval(s, t, "--image-ids-list", str(_file(t / "ids.txt", "1\nx\n"))), "--image-ids-list"),
    C("eval-id-list-unknown-id", EVAL,
      lambda s, t: _eval(s, t, "--image-ids-list", str(_file(t / "ids.txt", "987654\n"))), "987654"),
    # --- eval: instances files
    C("eval-instances-no-categories", EVAL, lambda s, t: _eval_inst(s, t, "no-categories"), "categories"),
    C("eval-instances-list-top-level", EVAL, lambda s, t: _eval_inst(s, t, "list-top-level"), "top level is a list"),
    C("eval-instances-string-image-ids", EVAL, lambda s, t: _eval_inst(s, t, "string-image-ids"), "integers"),
    C("eval-instances-image-without-file-name", EVAL, lambda s, t: _eval_inst(s, t, "no-file-name"), "file_name"),
    C("eval-instances-no-annotations", EVAL, lambda s, t: _eval_inst(s, t, "no-annotations"), "no annotations"),
    C("eval-instances-undefined-category-id", EVAL, lambda s, t: _eval_inst(s, t, "unknown-category-id"), "99999"),
    C("eval-instances-no-coco80-name", EVAL, lambda s, t: _eval_inst(s, t, "no-coco80-names"), "no-coco80-names.json"),
    C("eval-instances-not-json", EVAL, lambda s, t: _eval_inst(s, t, "not-json"), "not-json.json"),
    C("eval-instances-missing", EVAL, lambda s, t: [*_eval(s, t), "--instances", str(t / "nope.json")], "nope.json"),
    C("eval-images-dir-missing", EVAL, lambda s, t: [*_eval(s, t), "--images-dir", str(t / "noimg")], "noimg"),
    # --- eval: models
    C("eval-model-missing", EVAL, lambda s, t: _eval(s, t, model=t / "missing.onnx"), "missing.onnx"),
    C("eval-model-not-onnx", EVAL, lambda s, t: _eval(s, t, model=_file(t / "junk.onnx", "junk")), "junk.onnx"),
    C("eval-model-uint8-input", EVAL, lambda s, t: _eval(s, t, model=s.u8_model), "float32 input [N,3,H,W]"),
    C("eval-model-int8-input", EVAL, lambda s, t: _eval(s, t, model=s.i8_model), "float32 input [N,3,H,W]"),
    C("eval-model-1-channel-input", EVAL, lambda s, t: _eval(s, t, model=s.gray_model), "float32 input [N,3,H,W]"),
    C("eval-dynamic-model-imgsz-0", EVAL, lambda s, t: _eval(s, t, "--imgsz", "0", model=s.dynamic_model), "--imgsz"),
    C("eval-dynamic-model-imgsz-33", EVAL, lambda s, t: _eval(s, t, "--imgsz", "33", model=s.dynamic_model),
      "--imgsz"),
    # --- eval: the dataset check (before the model loads)
    C("data-ann-ids-restart-per-image", EVAL, lambda s, t: _ds(s, t, _ids_restart), "annotation id 1"),
    C("data-ann-ids-all-equal", EVAL, lambda s, t: _ds(s, t, _set_all("id", 7)), "annotation id 7"),
    C("data-ann-id-zero", EVAL, lambda s, t: _ds(s, t, _set_first("id", 0)), "has id 0"),
    C("data-ann-id-negative", EVAL, lambda s, t: _ds(s, t, _set_first("id", -3)), "has id -3"),
    C("data-ann-id-string", EVAL, lambda s, t: _ds(s, t, _set_first("id", "a1")), "has id 'a1'"),
    C("data-ann-id-missing", EVAL, lambda s, t: _ds(s, t, _drop_all("id")), "has no 'id'"),
    C("data-image-downscaled", EVAL, lambda s, t: _ds(s, t, _downscale), "decodes to 640x160"),
    C("data-image-exif-rotated", EVAL, lambda s, t: _ds(s, t, _exif(6)), "EXIF orientation 6"),
    C("data-image-exif-transposed", EVAL, lambda s, t: _ds(s, t, _exif(8)), "EXIF orientation 8"),
    C("data-box-negative-width", EVAL, lambda s, t: _ds(s, t, _box(2, -20.0)), "width and height must be > 0"),
    C("data-box-zero-height", EVAL, lambda s, t: _ds(s, t, _box(3, 0.0)), "width and height must be > 0"),
    C("data-box-nan", EVAL, lambda s, t: _ds(s, t, _nan_box), "not finite"),
    C("data-box-outside-image", EVAL, lambda s, t: _ds(s, t, _outside), "wholly outside"),
    C("data-image-entry-duplicated", EVAL, lambda s, t: _ds(s, t, _dup_image(None)), "listed 2 times"),
    C("data-image-file-under-two-ids", EVAL, lambda s, t: _ds(s, t, _dup_image(999)), "listed under ids"),
    C("data-image-missing", EVAL, lambda s, t: _ds(s, t, _damage_image("missing")), "--skip-unreadable-images"),
    C("data-image-truncated", EVAL, lambda s, t: _ds(s, t, _damage_image("truncated")), "end-of-image"),
    C("data-image-empty", EVAL, lambda s, t: _ds(s, t, _damage_image("empty")), "empty"),
    C("data-image-is-folder", EVAL, lambda s, t: _ds(s, t, _damage_image("folder")), "a folder"),
    C("data-iscrowd-not-0-1", EVAL, lambda s, t: _ds(s, t, _set_first("iscrowd", "no")), "iscrowd 'no'"),
    C("data-area-negative", EVAL, lambda s, t: _ds(s, t, _set_first("area", -5)), "area -5"),
    C("data-category-id-twice", EVAL, lambda s, t: _ds(s, t, _dup_category("id")), "defined more than once"),
    C("data-category-name-twice", EVAL, lambda s, t: _ds(s, t, _dup_category("name")), "several ids"),
    C("data-trt-ann-ids-restart", EVAL_TRT, lambda s, t: [*_eval_trt(s, t, "--engine-path", str(s.engine), "--out",
      str(t / "m.json")), *_set(s, t, _ids_restart)], "annotation id 1"),
    C("data-validate-ann-ids-restart", VALIDATE, lambda s, t: [*_validate(s, t), *_set(s, t, _ids_restart)],
      "annotation id 1"),
    C("data-calib-truncated-image", CALIB, lambda s, t: ["--images-dir", str(_set(s, t, _damage_image("truncated"))[3]),
      "--max-images", "0", "--imgsz", "64", "--no-progress", "--out", str(t / "c.npy")], "end-of-image"),
    # --- eval: model outputs and the exported input size
    C("model-two-head-like-outputs", EVAL, lambda s, t: _eval(s, t, model=s.variants["two-heads"]), "--output-name"),
    C("model-output-name-unknown", EVAL, lambda s, t: _eval(s, t, "--output-name", "nope",
                                                            model=s.variants["input-first"]), "extra_input"),
    C("model-output-name-not-a-head", EVAL, lambda s, t: _eval(s, t, "--output-name", "extra_input",
                                                               model=s.variants["input-first"]), "not a YOLOv10"),
    C("data-ann-id-fractional", EVAL, lambda s, t: _ds(s, t, _set_first("id", 1.5)), "has id 1.5"),
    C("model-no-head-like-output", EVAL, lambda s, t: _eval(s, t, "--output-format", "raw84",
                                                            model=s.variants["input-first"]), "none looks like"),
    C("model-imgsz-not-exported-size", EVAL, lambda s, t: _eval(s, t, "--imgsz", "320", model=s.variants["dyn-640"]),
      "--allow-imgsz-mismatch"),
    C("model-default-imgsz-not-exported-size", EVAL, lambda s, t: _eval(s, t, model=s.variants["dyn-320"]),
      "pass --imgsz 320"),
    C("model-trt-build-two-heads", EVAL_TRT, lambda s, t: _eval_trt(s, t, "--onnx-path", str(s.variants["two-heads"]),
      "--out", str(t / "m.json")), "--output-name"),
    C("model-validate-imgsz-not-exported-size", VALIDATE, lambda s, t: [*_validate(s, t, "--imgsz", "320"),
      "--onnx-path", str(s.variants["dyn-640"])], "--allow-imgsz-mismatch"),
    # --- the output policy: a file this toolkit did not write is never replaced (without --force)
    C("policy-eval-out-foreign-file", EVAL, lambda s, t: _eval(s, t, "--out", str(_file(t / "notes.md"))),
      "was not written by this toolkit"),
    C("policy-eval-out-foreign-json", EVAL, lambda s, t: _eval(s, t, "--out", str(_file(t / "m.json", "{}"))),
      "was not written by this toolkit"),
    C("policy-eval-detections-foreign", EVAL, lambda s, t: _eval(s, t, "--detections-out",
      str(_file(t / "d.json", "[]"))), "--detections-out"),
    C("policy-eval-trt-out-foreign", EVAL_TRT, lambda s, t: _eval_trt(s, t, "--engine-path", str(s.engine), "--out",
      str(_file(t / "notes.md"))), "was not written by this toolkit"),
    C("policy-build-engine-path-foreign", BUILD, lambda s, t: _build(s, t, "--engine-path",
      str(_file(t / "notes.md"))), "was not written by this toolkit", needs_trt=True),
    C("policy-build-engine-sidecar-foreign", BUILD, lambda s, t: _build(s, t, "--engine-path",
      _foreign_beside(t / "e.engine", ".json")), "--engine-path sidecar", needs_trt=True),
    C("policy-build-engine-path-slash", BUILD, lambda s, t: _build(s, t, "--engine-path", f"{t}/engines/"),
      "--engine-path"),
    C("policy-calib-out-foreign", CALIB, lambda s, t: _calib(s, t, "--out", str(_file(t / "c.npy"))),
      "was not written by this toolkit"),
    C("policy-calib-list-foreign", CALIB, lambda s, t: _calib(s, t, "--out",
      _foreign_beside(t / "c.npy", ".txt")), "--out image list"),
    C("policy-quant-out-foreign", QUANT, lambda s, t: _quant(s, t, "--out", str(_file(t / "q.onnx"))),
      "was not written by this toolkit"),
    C("policy-quant-out-slash", QUANT, lambda s, t: _quant(s, t, "--out", f"{t}/q/"), "--out"),
    C("policy-compare-summary-foreign", COMPARE, lambda s, t: [str(s.metrics), "--out-dir",
      str(_file(t / "o" / "summary.md").parent)], "was not written by this toolkit"),
    C("policy-doctor-json-foreign", DOCTOR, lambda s, t: ["--json-out", str(_file(t / "d.json", "{}")),
      "--no-session"], "was not written by this toolkit"),
    # --- latency and warm-up flags
    C("eval-skip-latency-every-batch", EVAL, lambda s, t: _eval(s, t, "--skip-latency", "2"), "--skip-latency"),
    C("eval-skip-latency-100", EVAL, lambda s, t: _eval(s, t, "--skip-latency", "100"), "--skip-latency 1 or less"),
    C("eval-warmup-runs-word", EVAL, lambda s, t: _eval(s, t, "--warmup-runs", "many"), "--warmup-runs"),
    C("eval-warmup-runs-negative", EVAL, lambda s, t: _eval(s, t, "--warmup-runs", "-1"), "--warmup-runs"),
    # --- comparisons only between comparable runs
    C("validate-candidate-is-the-baseline", VALIDATE, lambda s, t: _validate(s, t, "--candidate",
      str(_copy(s.model, t / "cand.onnx"))), "same model"),
    # --- eval (TensorRT): refused before a build or an engine is opened
    C("eval-trt-no-model", EVAL_TRT, lambda s, t: _eval_trt(s, t, "--out", str(t / "m.json")), "--engine-path"),
    C("eval-trt-out-is-engine", EVAL_TRT, lambda s, t: _eval_trt(s, t, "--engine-path", str(s.engine), "--out",
                                                                  str(s.engine)), "--out"),
    C("eval-trt-engine-path-is-onnx", EVAL_TRT, lambda s, t: _eval_trt(s, t, "--onnx-path", str(s.tiny),
      "--engine-path", str(s.tiny), "--out", str(t / "m.json")), "--engine-path"),
    C("eval-trt-runtime-cache-is-engine", EVAL_TRT, lambda s, t: _eval_trt(s, t, "--engine-path", str(s.engine),
      "--runtime-cache", str(s.engine), "--out", str(t / "m.json")), "--runtime-cache"),
    C("eval-trt-iou-1.5", EVAL_TRT, lambda s, t: _eval_trt(s, t, "--engine-path", str(s.engine), "--iou", "1.5",
                                                            "--out", str(t / "m.json")), "--iou"),
    C("eval-trt-engine-missing", EVAL_TRT, lambda s, t: _eval_trt(s, t, "--engine-path", str(t / "no.engine"),
      "--out", str(t / "m.json")), "--engine-path", needs_trt=True),
    # --- build
    C("build-engine-path-is-onnx", BUILD, lambda s, t: _build(s, t, "--engine-path", str(s.tiny)), "--engine-path",
      needs_trt=True),
    C("build-engine-path-is-directory", BUILD, lambda s, t: _build(s, t, "--engine-path", str(_mkdir(t / "e"))),
      "existing directory", needs_trt=True),
    C("build-engine-path-unwritable", BUILD, lambda s, t: _build(s, t, "--engine-path", f"{UNWRITABLE}/e.engine"),
      "not writable", needs_trt=True),
    C("build-timing-cache-is-onnx", BUILD, lambda s, t: _build(s, t, "--engine-path", str(t / "e.engine"),
      "--timing-cache", str(s.tiny)), "--timing-cache", needs_trt=True),
    C("build-onnx-missing", BUILD, lambda s, t: ["--onnx-path", str(t / "no.onnx"), "--backend", "tensorrt-rtx",
      "--engine-path", str(t / "e.engine")], "no.onnx", needs_trt=True),
    C("build-max-batch-0", BUILD, lambda s, t: _build(s, t, "--engine-path", str(t / "e.engine"), "--max-batch", "0"),
      "--max-batch", needs_trt=True),
    C("build-opt-level-9", BUILD, lambda s, t: _build(s, t, "--builder-optimization-level", "9"),
      "--builder-optimization-level"),
    C("build-shapes-malformed", BUILD, lambda s, t: _build(s, t, "--engine-path", str(t / "e.engine"), "--shapes",
      "x:1x3"), "--shapes", needs_trt=True),
    # --- infer
    C("infer-output-dir-is-file", INFER, lambda s, t: [*_infer(s, t), "--out", str(_file(t / "o.txt"))],
      "--out"),
    C("infer-iterations-0", INFER, lambda s, t: _infer(s, t, "--iterations", "0"), "--iterations"),
    C("infer-warmup-negative", INFER, lambda s, t: _infer(s, t, "--warmup-runs", "-1"), "--warmup-runs"),
    C("infer-input-malformed", INFER, lambda s, t: _infer(s, t, "--input", "images"), "--input"),
    C("infer-input-missing", INFER, lambda s, t: _infer(s, t, "--input", f"images={t / 'x.npy'}"), "--input"),
    C("infer-runtime-cache-is-engine", INFER, lambda s, t: _infer(s, t, "--runtime-cache", str(s.engine)),
      "--runtime-cache"),
    C("infer-runtime-cache-is-input", INFER, lambda s, t: _infer(s, t, "--input", f"x={_file(t / 'x.npy')}",
      "--runtime-cache", str(t / "x.npy")), "--runtime-cache"),
    C("infer-old-shape-alias-malformed", INFER, lambda s, t: _infer(s, t, "--shape", "x:axb"), "--input-shape"),
    C("infer-old-engine-alias-missing", INFER, lambda s, t: ["--engine", str(t / "no.engine"), "--backend",
      "tensorrt-rtx", "--out", str(t / "out")], "--engine-path", needs_trt=True),
    # --- calib
    C("calib-out-not-npy", CALIB, lambda s, t: _calib(s, t, "--out", str(t / "c.bin")), "--out"),
    C("calib-sidecar-is-image-list", CALIB, lambda s, t: ["--image-list", str(_file(t / "c.npy.txt", str(
      s.images / "000000000001.jpg"))), "--imgsz", "64", "--no-progress", "--out", str(t / "c.npy")],
      "--image-list"),
    C("calib-out-is-directory", CALIB, lambda s, t: _calib(s, t, "--out", str(_mkdir(t / "c.npy"))),
      "existing directory"),
    C("calib-out-unwritable", CALIB, lambda s, t: _calib(s, t, "--out", f"{UNWRITABLE}/c.npy"), "not writable"),
    C("calib-imgsz-33", CALIB, lambda s, t: [*_calib(s, t, "--out", str(t / "c.npy")), "--imgsz", "33"], "--imgsz"),
    C("calib-num-images-negative", CALIB, lambda s, t: [*_calib(s, t, "--out", str(t / "c.npy")), "--max-images",
                                                         "-1"], "--max-images"),
    C("calib-num-images-too-many", CALIB, lambda s, t: [*_calib(s, t, "--out", str(t / "c.npy")), "--max-images",
                                                         "1000"], "--max-images"),
    C("calib-images-dir-missing", CALIB, lambda s, t: ["--images-dir", str(t / "none"), "--out", str(t / "c.npy")],
      "none"),
    C("calib-list-and-dir", CALIB, lambda s, t: _calib(s, t, "--image-list", str(t / "l.txt"), "--out",
                                                        str(t / "c.npy")), "--image-list"),
    C("calib-corrupt-image", CALIB, lambda s, t: ["--image-list", str(_file(t / "l.txt", str(_file(t / "bad.jpg")))),
      "--imgsz", "64", "--no-progress", "--out", str(t / "c.npy")], "bad.jpg"),
    # --- quantize (cheap checks come before ModelOpt is imported)
    C("quant-out-is-onnx", QUANT, lambda s, t: _quant(s, t, "--out", str(s.tiny)), "--out"),
    C("quant-out-not-onnx", QUANT, lambda s, t: _quant(s, t, "--out", str(t / "q.bin")), "--out"),
    C("quant-out-is-directory", QUANT, lambda s, t: _quant(s, t, "--out", str(_mkdir(t / "q.onnx"))),
      "existing directory"),
    C("quant-out-sidecar-is-calib", QUANT, lambda s, t: ["--mode", "int8", "--onnx-path", str(s.tiny), "--calib",
      str(_file(t / "q.onnx.json")), "--out", str(t / "q.onnx")], "--out sidecar"),
    C("quant-onnx-missing", QUANT, lambda s, t: ["--mode", "fp16", "--onnx-path", str(t / "no.onnx"), "--out",
                                                  str(t / "q.onnx")], "no.onnx"),
    C("quant-int8-needs-calib", QUANT, lambda s, t: ["--mode", "int8", "--onnx-path", str(s.tiny), "--out",
                                                      str(t / "q.onnx")], "--calib"),
    C("quant-mode-unknown", QUANT, lambda s, t: ["--mode", "int4", "--onnx-path", str(s.tiny), "--out",
                                                  str(t / "q.onnx")], "--mode"),
    # --- validate
    C("validate-conf-nan", VALIDATE, lambda s, t: _validate(s, t, "--conf", "nan"), "--conf"),
    C("validate-iou-1.5", VALIDATE, lambda s, t: _validate(s, t, "--iou", "1.5"), "--iou"),
    C("validate-parity-iou-5", VALIDATE, lambda s, t: _validate(s, t, "--parity-iou", "5"), "--parity-iou"),
    C("validate-step-timeout-0", VALIDATE, lambda s, t: _validate(s, t, "--step-timeout", "0"), "--step-timeout"),
    C("validate-output-root-is-file", VALIDATE, lambda s, t: [*_validate(s, t), "--out",
                                                              str(_file(t / "root.txt"))], "--out"),
    C("validate-candidate-missing", VALIDATE, lambda s, t: _validate(s, t, "--candidate", str(t / "c.onnx")),
      "c.onnx"),
    C("validate-candidate-and-quantize", VALIDATE, lambda s, t: _validate(s, t, "--candidate", str(s.model),
      "--quantize", "int8"), "--candidate"),
    C("validate-max-images-cuts-id-list", VALIDATE, lambda s, t: _validate(s, t, "--image-ids-list", str(s.ids3)),
      "--max-images"),
    C("validate-imgsz-33", VALIDATE, lambda s, t: _validate(s, t, "--imgsz", "33"), "--imgsz"),
    # --- compare
    C("compare-parity-iou-5", COMPARE, lambda s, t: _compare(s, t, "--parity-iou", "5"), "--parity-iou"),
    C("compare-parity-iou-0", COMPARE, lambda s, t: _compare(s, t, "--parity-iou", "0"), "--parity-iou"),
    C("compare-parity-conf-negative", COMPARE, lambda s, t: _compare(s, t, "--parity-conf", "-1"), "--parity-conf"),
    C("compare-map-null", COMPARE, lambda s, t: [str(_metrics(t / "n" / "metrics.json", None)), "--out",
                                                  str(t / "cmp")], "mAP_50_95"),
    C("compare-not-json", COMPARE, lambda s, t: [str(_file(t / "metrics.json", "{")), "--out", str(t / "cmp")],
      "metrics.json"),
    C("compare-missing", COMPARE, lambda s, t: [str(t / "none.json"), "--out", str(t / "cmp")], "none.json"),
    C("compare-out-dir-is-file", COMPARE, lambda s, t: [str(s.metrics), "--out", str(_file(t / "o.txt"))],
      "--out"),
    C("compare-summary-would-overwrite-input", COMPARE, lambda s, t: [str(_metrics(t / "o" / "summary.json")),
      "--out", str(t / "o")], "--out"),
    C("compare-reference-unknown", COMPARE, lambda s, t: _compare(s, t, "--reference", "nope"), "--reference"),
    # --- doctor, setup (flags and paths; nothing probed)
    C("doctor-json-out-is-directory", DOCTOR, lambda s, t: ["--out", str(_mkdir(t / "j")), "--no-session"],
      "--out"),
    C("doctor-json-out-unwritable", DOCTOR, lambda s, t: ["--out", f"{UNWRITABLE}/d.json", "--no-session"],
      "--out"),
    C("doctor-python-missing", DOCTOR, lambda s, t: ["--python", str(t / "nopython"), "--out",
                                                     str(t / "d.json")], "--python"),
    C("doctor-unknown-flag", DOCTOR, lambda s, t: ["--jsonout", str(t / "d.json")], "--jsonout"),
    C("setup-cuda-major-11", SETUP, lambda s, t: ["--dry-run", "--cuda-major", "11"], "--cuda-major"),
    C("setup-trt-version-partial", SETUP, lambda s, t: ["--dry-run", "--trt-version", "10", "--index-url",
                                                        "https://pypi.nvidia.com"], "--trt-version"),
    C("setup-unknown-flag", SETUP, lambda s, t: ["--dryrun"], "--dryrun"),
]
# fmt: on

RESULTS: dict[str, tuple[int, str]] = {}


def _trt_available() -> bool:
    try:
        import tensorrt_rtx  # noqa: F401
    except Exception:
        return False
    return True


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, sb: Sandbox, tmp_path, monkeypatch, capsys):
    if case.needs_trt and not _trt_available():
        pytest.skip("needs the TensorRT-RTX Python API (its builder runs on the CPU)")
    t = tmp_path / "case"
    t.mkdir()
    monkeypatch.chdir(t)  # default run folders (tmp/<task>/...) would land here and be caught
    argv = case.argv(sb, t)
    before = _snapshot(sb.root, t)
    rc, out, err = _run(case.script, argv, capsys)
    after = _snapshot(sb.root, t)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    RESULTS[case.id] = (rc, lines[0] if lines else "")
    assert rc == 2, (rc, err, out)
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    assert "Traceback" not in err
    assert case.expect in lines[0], lines[0]
    assert after == before, {
        k: (before.get(k), after.get(k)) for k in set(before) | set(after) if before.get(k) != after.get(k)
    }


def test_matrix_has_at_least_60_cases_over_every_cli():
    assert len(CASES) >= 60
    assert {c.script for c in CASES} == {EVAL, EVAL_TRT, BUILD, INFER, CALIB, QUANT, VALIDATE, COMPARE, DOCTOR, SETUP}


# ----------------------------------------------------------------------------- valid but unusual images


def _unusual_images(folder: Path) -> dict[str, Path]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = {
        "grayscale": folder / "gray.png",
        "cmyk-jpeg": folder / "cmyk.jpg",
        "png-16-bit": folder / "deep.png",
        "1x1": folder / "dot.png",
        "10000x20": folder / "wide.png",
    }
    cv2.imwrite(str(paths["grayscale"]), np.tile(np.arange(64, dtype=np.uint8)[:, None] * 3, (1, 48)))
    Image.new("CMYK", (64, 48), (10, 200, 30, 0)).save(paths["cmyk-jpeg"])
    cv2.imwrite(str(paths["png-16-bit"]), np.full((40, 30, 3), 60000, np.uint16))
    cv2.imwrite(str(paths["1x1"]), np.full((1, 1, 3), 9, np.uint8))
    cv2.imwrite(str(paths["10000x20"]), np.full((20, 10000, 3), 200, np.uint8))
    return paths


@pytest.mark.parametrize("kind", ["grayscale", "cmyk-jpeg", "png-16-bit", "1x1", "10000x20"])
def test_unusual_image_calibrates(kind, tmp_path, capsys):
    path = _unusual_images(tmp_path / "img")[kind]
    listing = tmp_path / "list.txt"
    listing.write_text(f"{path}\n")
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    out = tmp_path / "c.npy"
    rc, _, err = _run(
        CALIB, ["--image-list", str(listing), "--imgsz", "64", "--no-progress", "--out", str(out)], capsys
    )
    RESULTS[f"calib-unusual-{kind}"] = (rc, "ok" if rc == 0 else err.strip())
    assert rc == 0, err
    arr = np.load(out)
    assert arr.shape == (1, 3, 64, 64) and arr.dtype == np.float32 and np.isfinite(arr).all()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before


def test_unusual_images_evaluate_with_id_list_and_warnings(tmp_path, capsys, monkeypatch):
    """One eval over all five unusual images: succeeds; the duplicate id in --image-ids-list counts once
    and is reported; a category no COCO-80 class has is warned about; what ran is printed and recorded."""
    images = _unusual_images(tmp_path / "img")
    names = {"person": 1, "unicorn": 2}
    data = {
        "images": [],
        "annotations": [],
        "categories": [{"id": i, "name": n} for n, i in names.items()],
    }
    for i, (_, p) in enumerate(images.items(), 1):
        h, w = cv2.imread(str(p), cv2.IMREAD_UNCHANGED).shape[:2] if p.suffix == ".png" else (48, 64)
        data["images"].append({"id": i, "file_name": p.name, "width": w, "height": h})
        data["annotations"].append(
            {"id": i, "image_id": i, "category_id": 1 + i % 2, "bbox": [0, 0, w, h], "area": float(w * h), "iscrowd": 0}
        )
    inst = tmp_path / "instances.json"
    inst.write_text(json.dumps(data))
    ids = tmp_path / "ids.txt"
    ids.write_text("5\n4\n3\n2\n1\n3\n")
    out = tmp_path / "out" / "m.json"
    monkeypatch.chdir(tmp_path)
    rc, stdout, err = _run(
        EVAL,
        [
            "--onnx-path",
            str(DEMO_MODEL),
            "--providers",
            "CPUExecutionProvider",
            "--instances",
            str(inst),
            "--images-dir",
            str(images["1x1"].parent),
            "--image-ids-list",
            str(ids),
            "--workers",
            "2",
            "--no-progress",
            "--out",
            str(out),
        ],
        capsys,
    )
    RESULTS["eval-unusual-images"] = (rc, "ok" if rc == 0 else err.strip())
    assert rc == 0, err
    assert "duplicate id(s) ignored" in err and "unicorn" in err and "match no COCO-80 class name" in err
    assert "images: 5 (from --image-ids-list" in stdout
    metrics = json.loads(out.read_text())  # strict JSON: parses with a NaN-refusing hook
    json.loads(out.read_text(), parse_constant=lambda c: pytest.fail(f"non-finite {c} in metrics.json"))
    assert metrics["metrics"]["num_images"] == 5 and metrics["image_ids"] == [5, 4, 3, 2, 1]
    assert oct(out.stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# ----------------------------------------------------------------------------- data-loss rules (units)


def test_run_dirs_created_in_the_same_second_are_distinct(tmp_path):
    from common.core.results import run_dir

    a = run_dir("eval-onnx", root=tmp_path, stamp="20260101-000000")
    b = run_dir("eval-onnx", root=tmp_path, stamp="20260101-000000")
    assert a != b and a.is_dir() and b.is_dir() and b.name == "20260101-000000-2"


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_written_files_follow_the_umask(tmp_path, mask):
    from common.core.results import atomic_write_json, atomic_write_text

    old = os.umask(mask)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        atomic_write_json(tmp_path / "b.json", {"a": 1})
    finally:
        os.umask(old)
    for name in ("a.txt", "b.json"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~mask


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_json_is_written_strict(tmp_path, value):
    from common.core.results import atomic_write_json

    with pytest.raises(ValueError, match="non-finite"):
        atomic_write_json(tmp_path / "m.json", {"conf": value})
    assert list(tmp_path.iterdir()) == []


def test_output_guard_rules(tmp_path):
    from common.core.errors import UserError
    from common.core.results import check_output_paths

    src = tmp_path / "in.onnx"
    src.write_bytes(b"model")
    link = tmp_path / "link.json"
    link.symlink_to(src)
    check_output_paths({"--out": tmp_path / "new" / "m.json"}, {"--onnx-path": src})  # fine: folder made later
    assert not (tmp_path / "new").exists()  # the guard creates nothing
    with pytest.raises(UserError, match=r"--out .* same file as --onnx-path"):
        check_output_paths({"--out": link}, {"--onnx-path": src})  # a symlink to the input is the input
    with pytest.raises(UserError, match=r"--out .* same file as --onnx-path"):
        check_output_paths({"--out": tmp_path / "x" / ".." / "in.onnx"}, {"--onnx-path": src})


# ----------------------------------------------------------------------------- SIGINT: no partial file


def _eval_argv(out: Path) -> list[str]:
    return [
        "--onnx-path",
        str(DEMO_MODEL),
        "--providers",
        "CPUExecutionProvider",
        "--data-root",
        str(MINI),
        "--max-images",
        "4",
        "--workers",
        "0",
        "--no-progress",
        "--out",
        str(out),
    ]


def test_sigint_during_eval_inference_leaves_nothing(tmp_path, capsys, monkeypatch):
    from common.ort import session as backends

    calls = {"n": 0}
    real = backends.OrtBackend.infer

    def interrupted(self, batch):
        calls["n"] += 1
        if calls["n"] == 3:  # Ctrl-C arrives during the third image
            raise KeyboardInterrupt
        return real(self, batch)

    monkeypatch.setattr(backends.OrtBackend, "infer", interrupted)
    monkeypatch.chdir(tmp_path)
    rc, _, err = _run(EVAL, _eval_argv(tmp_path / "out" / "m.json"), capsys)
    assert rc == 130 and "interrupted" in err
    assert calls["n"] == 3
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_sigint_while_writing_metrics_leaves_no_partial_file(tmp_path, capsys, monkeypatch):
    from common.core import results

    real = os.replace

    def interrupted(a, b):
        if str(b).endswith("m.json"):  # between writing the temporary file and renaming it
            raise KeyboardInterrupt
        return real(a, b)

    monkeypatch.setattr(results.os, "replace", interrupted)
    out = tmp_path / "out" / "m.json"
    rc, _, _ = _run(EVAL, _eval_argv(out), capsys)
    assert rc == 130
    assert not out.exists()
    assert not out.parent.exists()  # no temporary left, nor the folder made for it


def test_sigint_during_calibration_leaves_nothing(tmp_path, capsys, monkeypatch):
    from common.quant import calib

    calls = {"n": 0}
    real = calib.preprocess

    def interrupted(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(calib, "preprocess", interrupted)
    out = tmp_path / "out"
    out.mkdir()
    rc, _, _ = _run(
        CALIB,
        [
            "--images-dir",
            str(MINI / "val2017"),
            "--num-images",
            "4",
            "--imgsz",
            "64",
            "--no-progress",
            "--out",
            str(out / "c.npy"),
        ],
        capsys,
    )
    assert rc == 130 and calls["n"] == 2
    assert list(out.iterdir()) == []


def test_sigint_during_build_leaves_no_engine(tmp_path, capsys, monkeypatch):
    if not _trt_available():
        pytest.skip("needs the TensorRT-RTX Python API")
    from common.trt import build as trt_build

    def interrupted(*a, **k):  # Ctrl-C after the engine bytes, before its metadata
        raise KeyboardInterrupt

    monkeypatch.setattr(trt_build, "atomic_write_json", interrupted)
    onnx = D.tiny_model(tmp_path / "tiny.onnx")
    out = tmp_path / "out"
    rc, _, _ = _run(
        BUILD,
        [
            "--onnx-path",
            str(onnx),
            "--backend",
            "tensorrt-rtx",
            "--engine-path",
            str(out / "e.engine"),
            "--trt-verbosity",
            "error",
        ],
        capsys,
    )
    assert rc == 130
    assert not out.exists() or list(out.iterdir()) == []


# ----------------------------------------------------------------------------- smaller items


def test_compare_without_matplotlib_writes_md_and_json_and_links_no_png(tmp_path, capsys, monkeypatch):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` raises ImportError, as when absent
    a = _metrics(tmp_path / "runs" / "a" / "metrics.json")
    b = _metrics(tmp_path / "runs" / "b" / "metrics.json", 0.2, backend="tensorrt")
    out = tmp_path / "cmp"
    rc, stdout, err = _run(COMPARE, [str(a), str(b), "--out-dir", str(out)], capsys)
    assert rc == 0, err
    assert "plot skipped (pip install matplotlib)" in stdout
    assert sorted(p.name for p in out.iterdir()) == ["summary.json", "summary.md"]
    md = (out / "summary.md").read_text()
    assert "summary.png" not in md and "plot skipped" in md
    assert json.loads((out / "summary.json").read_text())["plot"] is None


def test_not_run_rows_name_their_model(tmp_path):
    from common.report.compare import Collection, NotRun
    from common.report.compare_render import render_markdown

    col = Collection()
    col.not_run = [
        NotRun("ort-cuda", "yolov10m", "fp32", "skipped", "no GPU"),
        NotRun("ort-cuda", "yolov10m-b", "fp32", "skipped", "no GPU"),
    ]
    summary = {
        "reference": {"label": "ort-cpu fp32", "model": "yolov10m", "mAP_50_95": 0.5},
        "parity": {"iou": 0.5, "conf": 0.25},
        "warnings": [],
    }
    md = render_markdown(summary, [], col.not_run)
    rows = [ln for ln in md.splitlines() if ln.startswith("| ort-cuda")]
    assert rows[0].startswith("| ort-cuda [yolov10m] |") and rows[1].startswith("| ort-cuda [yolov10m-b] |")


def test_validate_says_each_skip_reason_once(tmp_path):
    from common.report import validate as V

    logged: list[str] = []
    cfg = V.RunConfig(root=tmp_path, log=logged.append)
    model = _model_info(V, tmp_path)
    run = V.run_backend(cfg, "trt", model, V.Availability(False, "no TensorRT here"))
    assert run.status == "skipped" and run.reason == "no TensorRT here"
    assert not any("no TensorRT here" in line for line in logged)  # main() prints it once, in the availability list


def _model_info(V, tmp_path: Path):
    onnx = D.tiny_model(tmp_path / "m.onnx")
    return V.model_info(onnx, "baseline", "--onnx-path", "m")


def test_eval_help_examples_use_paths_that_exist(capsys):
    rc, out, _ = _run(EVAL, ["--help"], capsys)
    assert rc == 0
    example = next(ln for ln in out.splitlines() if "synthcoco-mini" in ln)
    paths = [w for w in example.split() if "/" in w and not w.startswith("scripts/")]
    assert paths and all((REPO / p).exists() for p in paths), paths


def test_infer_takes_the_shared_flag_names_and_the_old_spellings(capsys):
    rc, out, _ = _run(INFER, ["--help"], capsys)
    assert rc == 0 and "--engine-path" in out and "--input-shape" in out and "--shape NAME" not in out
    import infer_trt_engine

    args = infer_trt_engine.build_parser().parse_args(["--engine", "a.engine", "--shape", "x:1x3x8x8"])
    assert str(args.engine_path) == "a.engine" and args.input_shapes == ["x:1x3x8x8"]
    args = infer_trt_engine.build_parser().parse_args(["--engine", "a.engine", "--shapes", "x:1x3x8x8"])
    assert args.input_shapes == ["x:1x3x8x8"]


def test_one_case_in_a_real_interpreter_and_verbose_shows_the_traceback(sb, tmp_path):
    """The in-process matrix matches a real run; --verbose turns the one line into a traceback."""
    argv = _eval(sb, tmp_path, "--out", str(sb.model))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    before = _snapshot(sb.root)
    proc = subprocess.run(
        [sys.executable, str(SCRIPTS / f"{EVAL}.py"), *argv], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and "--out" in proc.stderr
    verbose = subprocess.run(
        [sys.executable, str(SCRIPTS / f"{EVAL}.py"), *argv, "--verbose"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert verbose.returncode != 0 and "Traceback" in verbose.stderr
    assert _snapshot(sb.root) == before


def test_matrix_table():
    """``pytest tests/test_bad_input_matrix.py -s``: prints case | rc | message (for the closing note)."""
    if not RESULTS:
        pytest.skip("run with the matrix")
    print("\n| case | rc | message |\n|---|---|---|")
    for case, (rc, msg) in RESULTS.items():
        print(f"| {case} | {rc} | {msg.replace('|', '/')} |")


# ----------------------------------------------------------------------------- dataset warnings: rc 0, in metrics.json


def _eval_set(s: Sandbox, t: Path, edit: Edit, capsys, *extra: str) -> tuple[int, str, dict]:
    """An evaluation of the 2-image set after ``edit``; (rc, stderr, metrics.json) with every input unchanged."""
    argv = _ds(s, t, edit, *extra)
    before = _snapshot(sb_root := s.root, t / "set")
    rc, _, err = _run(EVAL, argv, capsys)
    assert _snapshot(sb_root, t / "set") == before
    assert "Traceback" not in err
    return rc, err, json.loads((t / "m.json").read_text()) if rc == 0 else {}


def _coco_engines() -> list[str]:
    from common.data.coco import faster_coco_eval_available

    return ["pycocotools", "faster-coco-eval"] if faster_coco_eval_available() else ["pycocotools"]


def _box_areas(data: dict, _: Path) -> None:
    for a in data["annotations"]:
        a["iscrowd"], a["area"] = 0, float(a["bbox"][2] * a["bbox"][3])


@pytest.mark.parametrize("engine", _coco_engines())
def test_missing_iscrowd_and_area_are_filled_the_same_for_either_engine(sb, tmp_path, capsys, engine):
    """Absent iscrowd/area score exactly as iscrowd 0 and area = w x h written out (what COCO defines)."""
    rc, _, clean = _eval_set(sb, tmp_path / "clean", _box_areas, capsys, "--coco-eval", engine)
    assert rc == 0
    rc, err, m = _eval_set(sb, tmp_path / "bare", _drop_all("iscrowd", "area"), capsys, "--coco-eval", engine)
    assert rc == 0, err
    assert m["metrics"]["coco_stats"] == clean["metrics"]["coco_stats"]  # filled as COCO defines: same numbers
    n = len(_anns(json.loads((tmp_path / "bare" / "set" / "instances.json").read_text())))
    assert m["dataset_check"]["filled"] == {"iscrowd": n, "area": n}
    (w,) = [w for w in m["warnings"] if "iscrowd 0, area = box width x height" in w]
    assert w in m["dataset_check"]["warnings"] and err.count(w) == 1  # printed once, recorded


def _beyond(data: dict, _: Path) -> None:
    data["annotations"][0]["bbox"][0] = -6.0


def _no_size(data: dict, _: Path) -> None:
    for im in data["images"]:
        del im["width"], im["height"]


@pytest.mark.parametrize(
    "edit, extra, needle",
    [
        (_beyond, (), "beyond their image"),
        (_no_size, (), "have no width/height"),
        (_exif(3), (), "EXIF orientation"),
        (_damage_image("missing"), ("--skip-unreadable-images",), "left out of the evaluation"),
        (_damage_image("truncated"), ("--skip-unreadable-images",), "left out of the evaluation"),
    ],
    ids=["box-beyond-image", "image-without-size", "exif-flip-same-size", "skip-missing", "skip-truncated"],
)
def test_dataset_warnings_land_in_metrics(sb, tmp_path, capsys, edit, extra, needle):
    rc, err, m = _eval_set(sb, tmp_path, edit, capsys, *extra)
    RESULTS[f"data-warning-{needle.split()[0]}"] = (rc, next((ln for ln in err.splitlines() if needle in ln), ""))
    assert rc == 0, err
    (w,) = [w for w in m["dataset_check"]["warnings"] if needle in w]
    assert w in m["warnings"] and f"warning: {w}" in err
    if extra:
        (skipped,) = m["dataset_check"]["skipped_images"]
        assert skipped["image_id"] not in m["image_ids"] and m["metrics"]["num_images"] == 1


# ----------------------------------------------------------------------------- model outputs, exported size


def test_the_detection_head_is_found_among_several_outputs(sb, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, _, err = _run(EVAL, _eval(sb, tmp_path / "a"), capsys)
    assert rc == 0, err
    plain = json.loads((tmp_path / "a" / "m.json").read_text())
    rc, _, err = _run(EVAL, _eval(sb, tmp_path / "b", model=sb.variants["input-first"]), capsys)
    RESULTS["model-input-first-output"] = (rc, err.strip().splitlines()[0] if err.strip() else "")
    assert rc == 0, err
    m = json.loads((tmp_path / "b" / "m.json").read_text())
    assert m["metrics"]["coco_stats"] == plain["metrics"]["coco_stats"]  # not the 0.0 of the input copy
    assert m["run"]["output_name"] == "output0"
    (w,) = [w for w in m["warnings"] if "2 outputs; evaluating output0" in w]
    assert f"warning: {w}" in err
    rc, _, err = _run(
        EVAL, _eval(sb, tmp_path / "c", "--output-name", "extra_head", model=sb.variants["two-heads"]), capsys
    )
    assert rc == 0, err
    chosen = json.loads((tmp_path / "c" / "m.json").read_text())
    assert chosen["run"]["output_name"] == "extra_head" and chosen["metrics"] == plain["metrics"]


def test_imgsz_other_than_the_exported_size_runs_when_allowed(sb, tmp_path, capsys, monkeypatch):
    model = fixture_path("models", "yolov10n-synth-dynbatch.onnx")  # dynamic H/W, exported at 640
    monkeypatch.chdir(tmp_path)
    argv = _eval(sb, tmp_path, "--imgsz", "320", "--allow-imgsz-mismatch", model=model)
    rc, _, err = _run(EVAL, argv, capsys)
    assert rc == 0, err
    m = json.loads((tmp_path / "m.json").read_text())
    (w,) = [w for w in m["warnings"] if "--imgsz 320 differs" in w and "(640" in w]
    assert f"warning: {w}" in err and m["imgsz"] == 320
