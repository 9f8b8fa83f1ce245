"""Featurisers, model graphs, inference engines, bundle format, EIE emulation."""
