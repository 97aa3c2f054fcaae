"""``python -m pywatt_proto.jwt``: see :mod:`pywatt_proto.jwt._cli`."""

import sys

from ._cli import main

sys.exit(main())
