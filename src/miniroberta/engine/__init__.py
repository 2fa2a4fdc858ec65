"""The training engine shared by pretraining, fine-tuning and distillation."""
