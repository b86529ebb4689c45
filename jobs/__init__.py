"""Thin entry points: the `mura` CLI and the modules `ray job submit` runs."""
