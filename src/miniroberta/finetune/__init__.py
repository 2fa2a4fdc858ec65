"""Fine-tuning and evaluation: classifier trainer, inference, predictions, grid, report."""
