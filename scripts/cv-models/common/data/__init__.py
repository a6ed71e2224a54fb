"""Images (load, letterbox / unletterbox), the default image loaders, and COCO (datasets, image-id selection,
results JSON, COCOeval)."""
