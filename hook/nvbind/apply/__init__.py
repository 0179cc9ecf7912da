"""Ways out of the pipeline: spec (edit a config.json), ldcache (inside a container)."""
