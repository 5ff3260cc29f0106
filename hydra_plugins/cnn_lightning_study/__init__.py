"""Hydra sweeper plugin of cnn-lightning: Optuna studies that live in a database (see study.py)."""
