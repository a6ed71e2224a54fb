#!/usr/bin/env python3
"""Make a large COCO-format set out of a small one, for timing runs (the performance page's `rep5000`).

Writes OUT.json (an instances file of N images cycling over the source's images in id order, ids 1..N, each
with its source image's annotations under fresh ids) and OUT/ (a symbolic link per image, under a fresh file
name, to the source JPEG). Every image is scored against its own copy of the annotations, so the AP equals
the source's. Refuses to replace an existing OUT.json or OUT/.

    python scripts/dev/make_repeated_set.py --instances $F/synthcoco/annotations/instances_valA.json \\
        --images-dir $F/synthcoco/valA --images 5000 --out rep5000
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--instances", type=Path, required=True, help="the source's COCO instances JSON")
    ap.add_argument("--images-dir", type=Path, required=True, help="the source's image folder")
    ap.add_argument("--images", type=int, default=5000, help="images in the new set (default 5000)")
    ap.add_argument("--out", type=Path, default=None, help="OUT.json and OUT/ (default: rep<N> here)")
    return ap


def repeated(data: dict, n: int) -> dict:
    """``data`` (a COCO instances dict) with ``n`` images cycling over its images in id order: ids 1..n, file
    names ``rep_000001<suffix>``, each image's annotations copied under fresh ids."""
    images = sorted(data["images"], key=lambda im: im["id"])
    anns: dict[int, list[dict]] = {}
    for a in data.get("annotations", []):
        anns.setdefault(a["image_id"], []).append(a)
    out_images, out_anns = [], []
    for k in range(n):
        src = images[k % len(images)]
        name = f"rep_{k + 1:06d}{Path(src['file_name']).suffix}"
        out_images.append({**src, "id": k + 1, "file_name": name, "source_file_name": src["file_name"]})
        for a in anns.get(src["id"], []):
            out_anns.append({**a, "id": len(out_anns) + 1, "image_id": k + 1})
    return {**data, "images": out_images, "annotations": out_anns}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.images < 1:
        print(f"--images {args.images}: give at least 1", file=sys.stderr)
        return 2
    out = args.out or Path(f"rep{args.images}")
    json_path, folder = out.with_name(out.name + ".json"), out
    for p in (json_path, folder):
        if p.exists() or p.is_symlink():
            print(f"--out {out}: {p} exists; remove it or choose another --out", file=sys.stderr)
            return 2
    try:
        data = json.loads(args.instances.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        print(f"--instances {args.instances}: cannot read it as JSON ({exc})", file=sys.stderr)
        return 2
    if not data.get("images"):
        print(f"--instances {args.instances}: no images in it", file=sys.stderr)
        return 2
    rep = repeated(data, args.images)
    source = args.images_dir.resolve()
    folder.mkdir(parents=True)
    for im in rep["images"]:
        (folder / im["file_name"]).symlink_to(source / im.pop("source_file_name"))
    json_path.write_text(json.dumps(rep, separators=(",", ":")), encoding="utf-8")
    print(f"{len(rep['images'])} images, {len(rep['annotations'])} annotations -> {json_path}, {folder}/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
