"""The one training engine: device, precision, seeding, distributed, optimizer, loop, checkpoints, resume.

It knows no method and no dataset kind: a method plugs in through
:class:`simtool.engine.method.Method`, and :func:`simtool.engine.loop.fit` trains it. This face
imports nothing, so code that needs only a piece of the engine (``engine.device`` to pick a device,
when embedding or evaluating) never loads the training loop.
"""
