"""The model: config, BERT modules (HF parameter names), padding-free forward, tokenizer."""
