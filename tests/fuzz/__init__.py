"""Fuzzing kproxy's parsers of hostile input: shared targets and an atheris harness."""
