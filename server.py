"""Face of the chat server: ``python server.py [options]`` from a checkout.

The server lives in the :mod:`chatroom` package (``chatroom.server`` is its lifecycle and
command line); installed, the same entry point is the ``chat-server`` command.
"""

import sys

from chatroom.server import main

if __name__ == "__main__":
    sys.exit(main())
