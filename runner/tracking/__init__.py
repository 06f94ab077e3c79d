"""Experiment tracking (MLflow) for trials and reports, and the UI over it."""
