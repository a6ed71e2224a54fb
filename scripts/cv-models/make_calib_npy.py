#!/usr/bin/env python3
"""Build a float32 NCHW calibration tensor (.npy) letterboxed exactly as COCO evaluation does.

Writes OUT (float32 [N,3,S,S]), OUT.json (image ids, file names, seed, sha256) and OUT.txt
(the image paths, reusable as --image-list).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import common.core.envguard  # noqa: F401  (first: one line, not a traceback, on a Python without our dependencies)
from common.core.cli import (
    add_force_flag,
    add_old_spelling,
    check_imgsz,
    check_range,
    make_parser,
    output_file,
    run_main,
    setup_logging,
)
from common.core.errors import UserError
from common.core.results import check_output_paths
from common.data.check import SKIP_FLAG, check_image_files, describe
from common.data.coco import DEFAULT_MAX_IMAGES, IMAGES_DIR_RULE
from common.quant.calib import (
    build_calib_tensor,
    list_images_dir,
    read_image_list,
    resolve_images_dir,
    select_images,
    sidecar_paths,
)


def build_parser():
    parser = make_parser(
        __doc__.splitlines()[1],
        [
            "python scripts/cv-models/make_calib_npy.py --data-root datasets/coco2017/source-data "
            "--images-dir train2017 --max-images 100 --seed 0 --out tmp/calib/coco-train100.npy",
            "python scripts/cv-models/make_calib_npy.py --image-list my_images.txt --out tmp/calib/mine.npy",
        ],
    )
    src = parser.add_argument_group("images (a list file, or a directory to sample from)")
    src.add_argument(
        "--image-list",
        help="text file with one image path per line (relative to the file); all are used (default: none)",
    )
    src.add_argument(
        "--data-root", help="dataset root (default: none; with it, --images-dir defaults to <root>/val2017)"
    )
    src.add_argument(
        "--images-dir", help=f"directory of images to sample from (default: <data-root>/val2017); {IMAGES_DIR_RULE}"
    )
    count = src.add_argument(
        "--max-images", type=int, default=DEFAULT_MAX_IMAGES, help="images to sample (0 = all; default %(default)s)"
    )
    add_old_spelling(src, "--num-images", count)
    src.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    parser.add_argument("--imgsz", type=int, default=640, help="square network input size (default 640)")
    parser.add_argument(
        "--out",
        required=True,
        type=output_file("calib.npy"),
        help="output .npy; DIR/ means DIR/calib.npy (sidecars OUT.json and OUT.txt are written beside it); "
        "existing files are replaced only when this toolkit wrote them, or with --force",
    )
    add_force_flag(parser)
    parser.add_argument(
        SKIP_FLAG,
        action="store_true",
        help="leave missing or unreadable images out (listed in OUT.json) instead of refusing (default: refuse)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    if args.image_list and (args.images_dir or args.data_root):
        raise UserError("pass either --image-list or --images-dir/--data-root, not both")
    check_imgsz("--imgsz", args.imgsz)
    check_range("--max-images", args.max_images, 0)
    if args.image_list:
        paths = read_image_list(Path(args.image_list))
        images = select_images(paths, 0, args.seed)
        source: dict[str, Any] = {"image_list": str(Path(args.image_list).resolve())}
    else:
        images_dir = resolve_images_dir(args.data_root, args.images_dir)
        images = select_images(list_images_dir(images_dir), args.max_images, args.seed)
        source = {"images_dir": str(images_dir.resolve()), "seed": args.seed, "num_requested": args.max_images}
    # the tensor and its sidecars: not an input (list file, an image), not each other, before any image is read
    json_path, txt_path = sidecar_paths(args.out)
    inputs: dict[str, Path | None] = {"--image-list": Path(args.image_list) if args.image_list else None}
    inputs.update({f"image {i}": im.path for i, im in enumerate(images)})
    outputs = {"--out": args.out, "--out sidecar": json_path, "--out image list": txt_path}
    check_output_paths(outputs, inputs, force=args.force, vouchers=[json_path])
    keep, report = check_image_files([im.path for im in images], args.skip_unreadable_images)
    images = [images[i] for i in keep]
    print(f"image check: {describe(report)}")
    source["dataset_check"] = report.to_dict()
    record = build_calib_tensor(images, args.out, size=args.imgsz, progress=not args.no_progress, meta=source)
    print(f"wrote {args.out} shape={record['shape']} float32; image ids in {json_path}, paths in {txt_path}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
