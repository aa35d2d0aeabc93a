"""``python -m dicomslide``: the same as the ``dicomslide`` command."""

import sys

from dicomslide._cli import main

sys.exit(main())
