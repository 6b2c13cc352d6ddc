"""Sweeps: hyper-parameter searches run as Optuna studies of jobs, or as one Ray Tune driver job."""
