"""MLM pretraining: configs, launch (1 process, spawn, torchrun), the trainer, batches."""
