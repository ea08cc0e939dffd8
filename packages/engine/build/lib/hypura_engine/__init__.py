"""Generation engine: model registry, chat templates, plan-driven loading and streaming."""
