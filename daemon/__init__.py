"""The mittd daemon: CLI entry point (``cli``); the gRPC service, admission core,
IO proxy, metrics and config arrive with later work."""
