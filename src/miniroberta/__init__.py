"""miniroberta: pretrain, convert, fine-tune and serve compact Chinese BERT/RoBERTa encoders."""
__version__ = "0.1.0"
