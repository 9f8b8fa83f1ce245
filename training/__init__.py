"""Keras models, pruning, compression, evaluation reports, tuning (needs the
``train`` extra; nothing outside this package imports TensorFlow)."""
