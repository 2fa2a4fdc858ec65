"""``python -m miniroberta COMMAND ...``: the same as the ``miniroberta`` command."""
import sys

from miniroberta.cli import main

sys.exit(main())
