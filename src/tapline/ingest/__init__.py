"""Cloud ingest: the Sparkplug primary host application, the latest-value cache and batched writes."""
