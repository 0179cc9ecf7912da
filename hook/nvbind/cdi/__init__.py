"""CDI: generate specs for this host, validate and read specs (admin verbs only)."""
