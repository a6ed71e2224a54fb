"""The evaluator's printed report: the COCO summary table and the timing lines."""

from __future__ import annotations

from typing import Any

from common.data.check import describe
from common.data.coco import CocoDataset
from common.eval.pipeline import EvalResult
from common.eval.protocols import Backend

__all__ = ["format_report"]


def format_report(result: EvalResult, metrics: dict[str, Any], backend: Backend, dataset: CocoDataset) -> str:
    t = result.timings
    check = f"{describe(dataset.check_report)}" if dataset.check_report is not None else "not run"
    lines = [
        result.summary_table.rstrip(),
        "",
        f"{'backend':<22}{backend.name}",
        f"{'layout':<22}{result.layout}",
        f"{'images':<22}{result.num_images}",
        f"{'detections':<22}{metrics['num_detections']}",
        f"{'mAP50-95 / mAP50':<22}{metrics['mAP_50_95']:.4f} / {metrics['mAP_50']:.4f}",
        f"{'inference ms':<22}median {t['inference']['median_ms']:.2f}  p90 {t['inference']['p90_ms']:.2f}  "
        f"p99 {t['inference']['p99_ms']:.2f}  (batch {result.batch_size})",
        f"{'preprocess ms/img':<22}median {t['preprocess']['median_ms']:.2f}  "
        f"({t['workers']} {t.get('loaders', 'threads')} workers, overlapped)",
        f"{'latency ms':<22}median {t['latency']['median_ms']:.2f}  p90 {t['latency']['p90_ms']:.2f}  "
        f"p99 {t['latency']['p99_ms']:.2f}  ({t['latency_timing'].split(':')[0]})",
        f"{'postprocess ms/batch':<22}median {t['postprocess']['median_ms']:.2f}  "
        f"({t['postprocess_mode']}, overlapped)",
        f"{'end to end':<22}{t['end_to_end_images_per_s']:.1f} img/s  ({t['wall_seconds']:.2f} s)",
        f"{'COCOeval':<22}{t['eval_seconds']:.2f} s after the last batch ({t['coco_engine']})",
        f"{'dataset check':<22}{check}",
    ]
    return "\n".join(lines)
