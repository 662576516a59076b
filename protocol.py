"""Face of the IRC grammar: ``import protocol`` from a checkout gets :mod:`chatroom.protocol`.

The code lives in the package (so an install puts no module called ``protocol`` in
site-packages); this file only lets scripts and a Python prompt in the checkout reach it by
its short name.  Nothing in the package imports it.
"""

import sys

from chatroom import protocol as _protocol

sys.modules[__name__] = _protocol
