"""The built-in task: the report's multi-task network (semantic segmentation + depth)."""
