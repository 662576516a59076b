"""Face of the desktop chat client: ``python client.py`` from a checkout.

The code lives in the package (:mod:`chatroom.app` and the client modules below it, see
:mod:`chatroom`); an install runs the same ``main`` as ``chat-client``.  Nothing imports
this file.  ``python client.py --help`` lists the options.
"""

import sys

from chatroom.app import main

if __name__ == "__main__":
    sys.exit(main())
