#!/usr/bin/env python3
"""Re-create datasets/synthcoco-mini from ../shared/fixtures/synthcoco (maintainers only).

Takes the first 40 valA images by id plus every image with an extreme aspect ratio
(>= 3:1) or the largest size, up to 50, and writes them in the COCO val2017 layout.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--src", type=Path, default=Path("../shared/fixtures/synthcoco"))
    ap.add_argument("--dst", type=Path, default=Path("datasets/synthcoco-mini"))
    ap.add_argument("--count", type=int, default=50)
    args = ap.parse_args()
    data = json.loads((args.src / "annotations/instances_valA.json").read_text())
    images = sorted(data["images"], key=lambda im: im["id"])
    chosen = {im["id"] for im in images[:40]}
    extreme = [im for im in images if max(im["width"], im["height"]) >= 3 * min(im["width"], im["height"])]
    largest = sorted(images, key=lambda im: -im["width"] * im["height"])
    for im in extreme + largest:
        if len(chosen) >= args.count:
            break
        chosen.add(im["id"])
    out = {k: v for k, v in data.items() if k not in ("images", "annotations")}
    out["images"] = [im for im in images if im["id"] in chosen]
    out["annotations"] = [a for a in data["annotations"] if a["image_id"] in chosen]
    (args.dst / "val2017").mkdir(parents=True, exist_ok=True)
    (args.dst / "annotations").mkdir(parents=True, exist_ok=True)
    for im in out["images"]:
        shutil.copy2(args.src / "valA" / im["file_name"], args.dst / "val2017" / im["file_name"])
    (args.dst / "annotations/instances_val2017.json").write_text(json.dumps(out, separators=(",", ":")))
    print(f"{len(out['images'])} images, {len(out['annotations'])} annotations -> {args.dst}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
