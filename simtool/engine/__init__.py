"""The one training engine: device, precision, seeding, distributed, loop, checkpoints, resume."""

from simtool.engine.loop import Method, StepInfo, TrainingInterrupted, fit  # noqa: F401
