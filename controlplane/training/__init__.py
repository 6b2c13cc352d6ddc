"""Training: base models, jobs (finetune, evaluate, sweep driver), their state machine, dispatch, workers."""
