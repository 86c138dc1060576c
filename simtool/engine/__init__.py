"""The one training engine: device, precision, seeding, distributed, optimizer, loop, checkpoints, resume.

It knows no method and no dataset kind: a method plugs in through :class:`Method`.
"""

from simtool.engine.loop import TrainingInterrupted, fit  # noqa: F401
from simtool.engine.method import Method, StepInfo  # noqa: F401
