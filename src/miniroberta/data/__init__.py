"""Data: corpus preprocessing, the memory-mapped MLM dataset, masking, task readers."""
