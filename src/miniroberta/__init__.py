"""miniroberta: pretrain, convert, fine-tune and serve compact Chinese BERT/RoBERTa encoders."""
from miniroberta.engine.threads import set_wait_policy as _set_wait_policy

__version__ = "0.1.0"

# OpenMP threads that wait sleep instead of spinning, so that two jobs on one machine do not stall each
# other (docs/performance.md); it must be set before torch starts its OpenMP runtime, so here, first.
_set_wait_policy()
