"""Images (load, letterbox / unletterbox) and COCO (datasets, image-id selection, results JSON, COCOeval)."""
