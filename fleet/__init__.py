"""``mittd fleet``: one model per device, for many devices, on Ray.

A storage operator trains one model per SSD (as LinnOS and Heimdall do); for
thousands of devices that outgrows one machine. ``mittd.fleet`` runs the existing
flows (``train_flow``, the replayer, ``tune``) as one Ray task per device — a local
cluster started in-process by default, or an existing one (``--address`` /
``RAY_ADDRESS``) — and keeps going like a batch system: a bad trace is an error row,
a killed worker's task is retried, up-to-date devices are skipped.

Nothing here imports Ray or TensorFlow at import time: ``mittd --help`` and the
daemon never load them (Ray only inside :func:`mittd.fleet.runner.run_fleet`).
"""
