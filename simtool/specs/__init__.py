"""Pydantic specs behind every command, presets and profiles shipped as package data."""

from simtool.specs.base import Spec, deep_merge, load_yaml, parse_set, validate  # noqa: F401
