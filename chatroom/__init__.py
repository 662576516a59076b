"""The chat room: a threaded IRC server and a Tkinter client, one module per concern.

The checkout's ``server.py``, ``client.py`` and ``protocol.py`` are thin faces over this
package; an install (``pip install .``) puts only this package, and the ``chat-server`` and
``chat-client`` commands, on the machine.

Modules, bottom to top.  A module imports only modules listed before it on its own side or
in the shared part (``tests/test_layout.py`` reads every import and enforces this):

shared
    ``protocol``     IRC/IRCv3 grammar, numerics, name rules, casemappings, the token
                     bucket.  Pure: no sockets, no threads, imports no project module.
    ``transport``    socket concerns both sides have: OSError reasons, quiet shutdown, TLS
                     over memory BIOs (one lock per session), fingerprints.

server side
    ``config``       :class:`Config` and the command line that fills it.
    ``certs``        the TLS certificate: load, describe, make a self-signed one.
    ``storage``      how every store opens its SQLite database (WAL, busy timeout, schema).
    ``history``      the history store: room events and room state in SQLite, committed
                     (a group commit, on its own thread) before anyone receives them.
    ``accounts``     the accounts store: names, scrypt hashes (PHC strings), the throttle.
    ``files``        the files store: uploads on disk under random ids, their records in
                     SQLite, quota and retention.
    ``moderation``   the moderation store: server operators and server bans, in SQLite.
    ``markers``      the read-markers store: per account, the last read time of each
                     room and private talk, in SQLite (kept in memory once read).
    ``registry``     Client, Channel, Ban (a +b/+e/+I entry: masks and extbans), Registry
                     (the one lock) and its lookups.
    ``writer``       the writer thread: every send, shutdown and close.
    ``hub``          the facade handlers talk to: lock-queue-wake, replies, goodbyes,
                     welcome, ISUPPORT, LUSERS, MOTD and NAMES lines, room fan-out,
                     labeled responses, rooms saved and restored.
    ``multiline``    IRCv3 draft/multiline: batches received, checked, delivered as one
                     event, stored and replayed.
    ``playback``     stored events back on the wire: CHATHISTORY, the replay on join.
    ``login``        accounts on the wire: SASL PLAIN, REGISTER/VERIFY, nick protection.
    ``operators``    server operators: OPER, KILL, WALLOPS, server bans, INFO/HELP/ADMIN.
    ``presence``     who is around and how they look: MONITOR, AWAY (away-notify),
                     SETNAME, bot mode, WHO flags and WHOX.
    ``modes``        MODE on rooms and users.
    ``readmarker``   IRCv3 draft/read-marker: MARKREAD, the marker on join, changes told
                     to all of an account's connections; guests' markers per connection.
    ``handlers``     the command table and every ``cmd_*``.
    ``connection``   the reader thread: setup, read loop, flood control, finish.
    ``housekeeper``  the timer thread: registration deadline, PING, timeouts, chores.
    ``filehost``     the HTTP(S) file host (soju.im/FILEHOST): upload, download, limits.
    ``admin``        the admin command line: add, reset, delete and list accounts, and
                     make them server operators.
    ``server``       lifecycle (bind, accept, shutdown) and ``main``.

client side
    ``events``       the typed events a session puts on its queue.
    ``serverinfo``   what a server's ISUPPORT says, and a room's ordered member list.
    ``wording``      what the server says (goodbyes, refused joins, mode changes) in words.
    ``pins``         the certificate fingerprints the user trusts, per host:port, on disk.
    ``secrets_store`` the account passwords the user asked to remember, per host:port:name.
    ``settings``     what worked last time (server, name, TLS, window size) and the rooms
                     that were open, per profile, for the next start.
    ``transfer``     uploads to and downloads from a file host (http.client, no Tk).
    ``session``      :class:`ChatSession`: network and sender threads, no Tk.
    ``slash``        the slash-command table and the text it parses (no Tk).
    ``lines``        how events look as lines of the log (no Tk).
    ``convs``        the window's conversations (rooms, private talks), unread counts and
                     mentions (no Tk).
    ``logview``      one conversation's scrollback widget: links, find, "new messages".
    ``dialogs``      Join Room… and the emoji picker; the window's urgency hint.
    ``views``        the Tk widgets; they take plain data and callbacks, never a session.
    ``app``          :class:`ChatApp`, the controller of one window, and ``main``.

Rules beside the order: server-side and client-side modules never import each other; only
the window's modules (``logview``, ``dialogs``, ``views``) import :mod:`tkinter`; the
stores (``history``, ``accounts``, ``files``, ``moderation`` and ``markers``) sit below
``registry`` and import neither ``registry`` nor ``handlers``; nothing imports the faces.
"""
