"""Tasks: what trains one configuration. ``mtl`` is the report's multi-task network."""
