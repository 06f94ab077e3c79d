"""Helpers shared by every test package: the one fake task, user tasks written beside a study
file, and the one way to run the CLI."""
