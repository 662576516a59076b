"""What an operator can set: :class:`Config`, and the command line that fills it.

Read by every server thread, written by none once the server starts (the main thread
builds it before any other thread exists).
"""

from __future__ import annotations

import argparse
import re
import urllib.parse
from dataclasses import dataclass

from chatroom import protocol as P

VERSION = "chatroom-0.1"


@dataclass
class Config:
    """Everything an operator can set.  Defaults are what ``python server.py`` uses."""

    host: str = "127.0.0.1"
    port: int | None = 1027  # plaintext; None for none (0 picks a free port, as tests do)
    name: str = "chat.local"
    network: str = "ChatRoom"
    motd: list[str] | None = None
    password: str | None = None
    max_clients: int = 10000
    max_per_ip: int = 0
    sendq: int = 256 * 1024
    register_timeout: float = 60.0
    ping_interval: float = 90.0
    ping_timeout: float = 60.0
    line_timeout: float = 30.0  # an unfinished line older than this closes the connection
    max_channels: int = 20  # rooms per user
    max_members: int = 0  # members per room, 0 for no limit
    flood_control: bool = True
    flood_burst: int = 10
    flood_rate: float = 2.0
    flood_kill: int = 60  # lines waiting beyond the burst before "Excess Flood"
    recvq: int = 8192  # unread bytes a throttled client may have waiting before "Excess Flood"
    # IRCv3 draft/multiline: offered or not, what one batch may hold (advertised in CAP
    # LS), and how long it may stay open.
    multiline: bool = True
    multiline_max_bytes: int = 4096  # the combined message: texts and the line feeds
    multiline_max_lines: int = 100
    multiline_timeout: float = 30.0
    data_dir: str = "chat-data"
    history: bool = True  # --no-history turns it off: nothing is stored
    history_days: float = 0.0  # events older than this are pruned; 0 keeps everything
    replay_lines: int = 50  # lines replayed on join to clients that can't fetch history
    # Accounts (kept in the data directory).
    registration: str = "open"  # "open": anyone may REGISTER; "closed": only the admin CLI
    require_account: bool = False  # a connection must log in before it may join or talk
    nick_grace: float = 30.0  # seconds a guest may keep a registered nick
    login_free: int = 3  # failed logins (per connection, per account) before they slow down
    login_max: int = 10  # failed logins within login_window before they are refused
    login_window: float = 600.0
    register_limit: int = 10  # REGISTER attempts per address per hour
    # Accounts that may become server operators with OPER (besides those the admin
    # command line made operators in the data directory).
    opers: tuple[str, ...] = ()
    scrypt_cost: int = 14  # log2 of scrypt's N for new password hashes (tests lower it)
    # TLS is on when a certificate and key are given (or made: tls_self_signed).
    tls_port: int = 6697  # 0 picks a free port, as tests do
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_self_signed: bool = False
    tls_handshake_timeout: float = 10.0
    sts_duration: int = 0  # seconds of the STS policy; 0 offers no sts cap
    # File sharing: an HTTP(S) file host in the same process (soju.im/FILEHOST).
    files_port: int | None = 1028  # None for none (0 picks a free port, as tests do)
    max_upload: int = 50 << 20  # bytes one upload may have
    files_days: float = 0.0  # files older than this are deleted; 0 keeps everything
    files_quota: int = 1 << 30  # bytes of files one account may keep; 0 for no limit
    public_url: str | None = None  # the file host as clients reach it, e.g. https://host:1028
    files_timeout: float = 30.0  # seconds an HTTP peer may stay silent (and send its headers)
    files_connections: int = 64  # HTTP connections served at once (a thread each)

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None and self.tls_key is not None


_SIZE_RE = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([KMGT]?)(?:I?B)?\s*\Z", re.IGNORECASE)


def parse_size(text: str) -> int:
    """Bytes from ``52428800``, ``50M``, ``50MiB``, ``1.5G`` (K, M, G, T: powers of 1024)."""
    match = _SIZE_RE.match(text)
    if match is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size (e.g. 52428800, 50M, 1G)")
    number, unit = float(match.group(1)), match.group(2).upper()
    return int(number * 1024 ** " KMGT".index(unit or " "))


def public_url_problem(url: str) -> str | None:
    """Why ``url`` can't be the file host's public address, or None."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "it must be an http:// or https:// URL with a host"
    if parts.query or parts.fragment or parts.username or parts.password:
        return "it must have no query, fragment or credentials"
    return None


def parse_args(argv: list[str] | None = None) -> tuple[Config, str]:
    """The config and the log level from the command line; a bad value exits with usage."""
    d = Config()
    p = argparse.ArgumentParser(
        description="Threaded chat server speaking a subset of the IRC client protocol.",
        epilog="Accounts: 'python server.py account add|passwd|delete|list|oper|deoper NAME "
               "[--data-dir DIR]' (see 'python server.py account --help'); the password is "
               "read from a prompt or stdin, never from the command line.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--host", default=d.host, help="address to listen on (0.0.0.0 for the LAN)")
    p.add_argument("--port", type=int, default=d.port,
                   help="plaintext TCP port to listen on (0: none, with TLS on)")
    p.add_argument("--name", default=d.name, help="server name shown in replies")
    p.add_argument("--network", default=d.network, help="network name shown on welcome")
    p.add_argument("--motd", metavar="FILE", help="message-of-the-day text file")
    p.add_argument("--password", help="server password clients must send with PASS")
    p.add_argument("--max-clients", type=int, default=d.max_clients,
                   help="most connections at once; more get 'ERROR :Server full'")
    p.add_argument("--max-per-ip", type=int, default=d.max_per_ip,
                   help="most connections from one address (0: no limit)")
    p.add_argument("--sendq", type=int, default=d.sendq,
                   help="bytes queued for a client before it is disconnected")
    p.add_argument("--register-timeout", type=float, default=d.register_timeout,
                   help="seconds a new connection has to register")
    p.add_argument("--ping-interval", type=float, default=d.ping_interval,
                   help="seconds of silence before the server sends PING")
    p.add_argument("--ping-timeout", type=float, default=d.ping_timeout,
                   help="seconds to wait for the answer to PING")
    p.add_argument("--line-timeout", type=float, default=d.line_timeout,
                   help="seconds a started line may take to finish")
    p.add_argument("--max-channels", type=int, default=d.max_channels,
                   help="rooms one user may be in")
    p.add_argument("--max-members", type=int, default=d.max_members,
                   help="members one room may hold (0: no limit)")
    p.add_argument("--flood-burst", type=int, default=d.flood_burst,
                   help="commands a client may send at once before it is slowed")
    p.add_argument("--flood-rate", type=float, default=d.flood_rate,
                   help="commands per second a client may send after the burst")
    p.add_argument("--flood-kill", type=int, default=d.flood_kill,
                   help="commands beyond the allowance that disconnect with 'Excess Flood'")
    p.add_argument("--recvq", type=int, default=d.recvq,
                   help="unread bytes a throttled client may have waiting before 'Excess Flood'")
    p.add_argument("--no-flood-control", action="store_true",
                   help="turn flood control off (benchmarks, conformance runs)")
    p.add_argument("--data-dir", default=d.data_dir, metavar="DIR",
                   help="where the server keeps its data (created when first needed)")
    hist = p.add_argument_group("history (kept in the data directory)")
    hist.add_argument("--no-history", action="store_true",
                      help="store nothing: no history, no CHATHISTORY, rooms forget their "
                           "topic and modes on restart")
    hist.add_argument("--history-days", type=float, default=d.history_days, metavar="DAYS",
                      help="delete events older than this many days (0: keep everything)")
    hist.add_argument("--replay-lines", type=int, default=d.replay_lines, metavar="N",
                      help="lines replayed on join to clients that show server times but "
                           "can't fetch history (0: none)")
    ml = p.add_argument_group("multiline messages (IRCv3 draft/multiline)")
    ml.add_argument("--no-multiline", action="store_true",
                    help="don't offer draft/multiline: every line is a message of its own")
    ml.add_argument("--multiline-max-bytes", type=int, default=d.multiline_max_bytes,
                    metavar="BYTES",
                    help="most bytes of text one multiline message may have (line breaks "
                         "count one each)")
    ml.add_argument("--multiline-max-lines", type=int, default=d.multiline_max_lines,
                    metavar="N", help="most lines one multiline message may have")
    ml.add_argument("--multiline-timeout", type=float, default=d.multiline_timeout,
                    metavar="SECONDS",
                    help="how long a multiline batch may stay open before it is dropped")
    acc = p.add_argument_group("accounts (kept in the data directory)")
    acc.add_argument("--registration", choices=["open", "closed"], default=d.registration,
                     help="who may create accounts: anyone (REGISTER), or only the admin "
                          "command line (python server.py account add NAME)")
    acc.add_argument("--require-account", action="store_true",
                     help="a private server: a connection must log in before it can join "
                          "a room or talk")
    acc.add_argument("--nick-grace", type=float, default=d.nick_grace, metavar="SECONDS",
                     help="how long someone not logged in may keep a registered nick before "
                          "being renamed to a guest name")
    acc.add_argument("--login-free", type=int, default=d.login_free, metavar="N",
                     help="failed logins (per connection and per account) before each "
                          "further try must wait, the wait doubling each time")
    acc.add_argument("--login-max", type=int, default=d.login_max, metavar="N",
                     help="failed logins within --login-window that make further tries wait "
                          "until the oldest expires")
    acc.add_argument("--login-window", type=float, default=d.login_window, metavar="SECONDS",
                     help="how long a failed login counts")
    acc.add_argument("--oper", action="append", metavar="ACCOUNT",
                     help="an account that may become a server operator with OPER "
                          "(repeatable; 'account oper NAME' stores one in the data directory)")
    acc.add_argument("--register-limit", type=int, default=d.register_limit, metavar="N",
                     help="REGISTER attempts one address may make per hour")
    tls = p.add_argument_group("TLS (encrypted connections)")
    tls.add_argument("--tls-port", type=int, default=d.tls_port,
                     help="TLS port, on when a certificate is given or made")
    tls.add_argument("--tls-cert", metavar="FILE",
                     help="certificate chain (PEM); with --tls-key, turns TLS on")
    tls.add_argument("--tls-key", metavar="FILE", help="private key of --tls-cert (PEM)")
    tls.add_argument("--tls-self-signed", action="store_true",
                     help="make a self-signed certificate in the data directory on first "
                          "start (needs the openssl command) and use it")
    tls.add_argument("--tls-handshake-timeout", type=float, default=d.tls_handshake_timeout,
                     help="seconds a TLS client has to finish its handshake")
    tls.add_argument("--sts-duration", type=int, default=d.sts_duration, metavar="SECONDS",
                     help="offer the IRCv3 sts policy for this long (only with a CA-signed "
                          "certificate: clients then refuse plaintext; 0: off)")
    files = p.add_argument_group("files (sharing files over HTTP, kept in the data directory)")
    files.add_argument("--files-port", type=int, default=d.files_port, metavar="PORT",
                       help="port of the HTTP file host, HTTPS when TLS is on (0: no file "
                            "sharing)")
    files.add_argument("--max-upload", type=parse_size, default=d.max_upload, metavar="BYTES",
                       help="largest file one upload may have (suffixes K, M, G: 50M)")
    files.add_argument("--files-days", type=float, default=d.files_days, metavar="DAYS",
                       help="delete files older than this many days (0: keep everything)")
    files.add_argument("--files-quota", type=parse_size, default=d.files_quota,
                       metavar="BYTES",
                       help="bytes of files one account may keep (suffixes K, M, G; 0: no "
                            "limit)")
    files.add_argument("--public-url", metavar="URL",
                       help="the file host's address as users reach it, e.g. "
                            "https://chat.example.org:1028; without it, each client is "
                            "given the address it connected to, on --files-port")
    files.add_argument("--files-timeout", type=float, default=d.files_timeout,
                       metavar="SECONDS",
                       help="seconds an HTTP client may stay silent, and may take to send "
                            "a request's headers")
    files.add_argument("--files-connections", type=int, default=d.files_connections,
                       metavar="N", help="HTTP connections served at once (more get 503)")
    p.add_argument("--log-level", default="INFO",
                   choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="logging threshold")
    a = p.parse_args(argv)
    motd = None
    if a.motd:
        try:
            with open(a.motd, encoding="utf-8", errors="replace") as f:
                motd = [P.strip_bad(line.rstrip("\r\n")) for line in f][:200]
        except OSError as exc:
            p.error(f"cannot read --motd {a.motd}: {exc.strerror}")
    for opt in ("max_clients", "sendq", "max_channels", "flood_burst", "recvq"):
        if getattr(a, opt) < 1:
            p.error(f"--{opt.replace('_', '-')} must be at least 1")
    for opt in ("register_timeout", "ping_interval", "ping_timeout", "line_timeout",
                "flood_rate"):
        if getattr(a, opt) <= 0:
            p.error(f"--{opt.replace('_', '-')} must be positive")
    if not 0 <= a.port <= 65535:
        p.error("--port must be 0-65535")
    if not 1 <= a.tls_port <= 65535:
        p.error("--tls-port must be 1-65535")
    if (a.tls_cert is None) != (a.tls_key is None):
        p.error("--tls-cert and --tls-key go together")
    if a.tls_self_signed and a.tls_cert:
        p.error("--tls-self-signed makes its own certificate: leave out --tls-cert/--tls-key")
    tls_on = a.tls_self_signed or a.tls_cert is not None
    if a.port == 0 and not tls_on:
        p.error("--port 0 turns the plaintext port off; give a TLS certificate (--tls-cert "
                "and --tls-key, or --tls-self-signed) so there is something to listen on")
    if a.tls_port == a.port:
        p.error("--tls-port and --port must differ")
    if a.tls_handshake_timeout <= 0:
        p.error("--tls-handshake-timeout must be positive")
    if a.sts_duration < 0:
        p.error("--sts-duration must be 0 or more")
    if a.sts_duration and not tls_on:
        p.error("--sts-duration needs TLS (--tls-cert and --tls-key)")
    if a.history_days < 0:
        p.error("--history-days must be 0 (keep everything) or more")
    if not 0 <= a.replay_lines <= 500:
        p.error("--replay-lines must be 0-500")
    if a.multiline_max_bytes < 1 or a.multiline_max_lines < 1 or a.multiline_timeout <= 0:
        p.error("--multiline-max-bytes, --multiline-max-lines and --multiline-timeout must "
                "be positive")
    if a.nick_grace < 0:
        p.error("--nick-grace must be 0 or more")
    if a.login_free < 0 or a.login_max < 1 or a.login_window <= 0 or a.register_limit < 1:
        p.error("--login-free must be 0 or more; --login-max, --login-window and "
                "--register-limit must be positive")
    if not 0 <= a.files_port <= 65535:
        p.error("--files-port must be 0-65535")
    if a.files_port and a.files_port in (a.port, a.tls_port if tls_on else None):
        p.error("--files-port must differ from --port and --tls-port")
    if a.max_upload < 1:
        p.error("--max-upload must be at least 1 byte")
    if a.files_days < 0:
        p.error("--files-days must be 0 (keep everything) or more")
    if a.files_quota < 0:
        p.error("--files-quota must be 0 (no limit) or more")
    if a.files_timeout <= 0 or a.files_connections < 1:
        p.error("--files-timeout and --files-connections must be positive")
    if a.public_url is not None and public_url_problem(a.public_url):
        p.error(f"--public-url {a.public_url}: {public_url_problem(a.public_url)}")
    for name in a.oper or ():
        if P.nick_problem(name) is not None:
            p.error(f"--oper {name}: not an account name ({P.nick_problem(name)})")
    if " " in a.name or not a.name:
        p.error("--name must be one word")
    return Config(
        host=a.host, port=a.port or None, name=a.name, network=a.network, motd=motd,
        password=a.password, max_clients=a.max_clients, max_per_ip=a.max_per_ip,
        sendq=a.sendq, register_timeout=a.register_timeout, ping_interval=a.ping_interval,
        ping_timeout=a.ping_timeout, line_timeout=a.line_timeout, max_channels=a.max_channels,
        max_members=a.max_members, flood_control=not a.no_flood_control,
        flood_burst=a.flood_burst, flood_rate=a.flood_rate, flood_kill=a.flood_kill,
        recvq=a.recvq, data_dir=a.data_dir, tls_port=a.tls_port, tls_cert=a.tls_cert,
        tls_key=a.tls_key, tls_self_signed=a.tls_self_signed,
        tls_handshake_timeout=a.tls_handshake_timeout, sts_duration=a.sts_duration,
        history=not a.no_history, history_days=a.history_days, replay_lines=a.replay_lines,
        multiline=not a.no_multiline, multiline_max_bytes=a.multiline_max_bytes,
        multiline_max_lines=a.multiline_max_lines,
        multiline_timeout=a.multiline_timeout,
        registration=a.registration, require_account=a.require_account,
        nick_grace=a.nick_grace, login_free=a.login_free, login_max=a.login_max,
        login_window=a.login_window, register_limit=a.register_limit,
        opers=tuple(a.oper or ()),
        files_port=a.files_port or None, max_upload=a.max_upload, files_days=a.files_days,
        files_quota=a.files_quota, public_url=a.public_url, files_timeout=a.files_timeout,
        files_connections=a.files_connections,
    ), a.log_level
