"""Regression tests for races and robustness holes found by hunting them on a live server."""

from __future__ import annotations

import socket
import threading
import time

from conftest import LineClient, RunningServer

RST = b"\x01\x00\x00\x00\x00\x00\x00\x00"


def test_readers_who_keep_up_are_never_cut_for_writer_lag(make_server) -> None:
    """Pipelined bursts from several senders must not read as "SendQ exceeded" for clients
    that read as fast as they can: only a client whose socket is full is too slow."""
    s = make_server()
    senders = [s.client(f"snd{i}", "#burst") for i in range(4)]
    receivers = [s.client(f"rcv{i}", "#burst") for i in range(4)]
    for c in senders + receivers:
        c.send("PING :drained")
        c.expect("drained")  # everything before it (the join noise) is read
    per_sender, payload = 300, "z" * 420
    got = {r.nick: 0 for r in receivers}
    quits: list[str] = []

    def read(r: LineClient) -> None:
        # Count in raw chunks: a line-at-a-time Python reader in the server's own process
        # would itself be the slow consumer this test is not about.
        r.sock.settimeout(20)
        tail = b""
        try:
            while got[r.nick] < per_sender * len(senders):
                chunk = r.sock.recv(1 << 20)
                if not chunk:
                    quits.append(f"{r.nick} closed")
                    return
                data = tail + chunk
                cut = data.rfind(b"\n") + 1
                whole, tail = data[:cut], data[cut:]
                got[r.nick] += whole.count(b" PRIVMSG ")
                if b" QUIT " in whole or b"ERROR" in whole:
                    quits.append(whole[-300:].decode(errors="replace"))
        except OSError as exc:
            quits.append(repr(exc))

    readers = [threading.Thread(target=read, args=(r,)) for r in receivers]
    for t in readers:
        t.start()
    blobs = ["".join(f"PRIVMSG #burst :{k} {payload}\r\n" for k in range(per_sender)).encode()
             for _ in senders]
    pushers = [threading.Thread(target=c.sock.sendall, args=(b,)) for c, b in zip(senders, blobs)]
    for t in pushers:
        t.start()
    for t in pushers + readers:
        t.join(timeout=60)
    assert not quits, quits[:3]
    assert all(n == per_sender * len(senders) for n in got.values()), got


def _writer_cpu_seconds(srv: RunningServer) -> float:
    tid = srv.server.writer.thread.native_id
    with open(f"/proc/self/task/{tid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100  # utime + stime, in clock ticks


def test_reset_of_a_blocked_client_does_not_spin_the_writer(make_server) -> None:
    # Generous burst for the talker, then a crawl, and no recvq cut: the victim's reader
    # ends up asleep in the throttle while its socket is blocked.
    s = make_server(flood_control=True, flood_burst=900, flood_rate=0.5, flood_kill=100000,
                    recvq=10**8)
    victim = LineClient(s.address)
    victim.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    victim.register("blocked")
    victim.join("#spin")
    talker = s.client("talker2", "#spin")
    talker.send("".join(f"PRIVMSG #spin :{k} {'q' * 400}\r\n" for k in range(800)).encode())
    assert s.wait_for(lambda: s.server.reg.nicks["blocked"].blocked, timeout=10)
    victim.send("".join(f"PING :t{k}\r\n" for k in range(950)))  # its reader is now throttled
    victim.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RST)
    victim.close()
    before = _writer_cpu_seconds(s)
    time.sleep(1.0)  # measuring an interval: how much CPU the writer burns in it
    assert _writer_cpu_seconds(s) - before < 0.3


def test_join_zero_racing_with_kicks_never_errors(make_server) -> None:
    srv = make_server(max_channels=40)
    op = srv.client("kicker")
    user = srv.client("target")
    rooms = [f"#r{i}" for i in range(30)]
    op.send("JOIN " + ",".join(rooms))
    for _ in rooms:
        op.lines_until("366")
    user.send("JOIN " + ",".join(rooms))
    for _ in rooms:
        user.lines_until("366")
    op.send("PING :drained")
    op.expect("drained")
    op.send("".join(f"KICK {r} target\r\n" for r in rooms).encode())
    user.send("JOIN 0")
    user.send("PING :done")
    lines = user.expect("PONG", timeout=10)
    assert not [x for x in lines if " 400 " in x], lines
    assert srv.wait_for(lambda: not srv.server.reg.nicks["target"].channels)


def test_nothing_reaches_a_client_before_its_welcome(srv: RunningServer) -> None:
    spammers = [srv.client(f"spam{i}") for i in range(4)]
    stop = threading.Event()

    def spam(c: LineClient) -> None:
        while not stop.is_set():
            c.send("".join("PRIVMSG newbie :hi\r\n" for _ in range(20)))
            try:
                c.sock.settimeout(0.01)
                c.sock.recv(65536)
            except OSError:
                pass

    threads = [threading.Thread(target=spam, args=(c,)) for c in spammers]
    for t in threads:
        t.start()
    try:
        for _ in range(30):
            c = LineClient(srv.address)
            c.send("NICK newbie\r\nUSER n 0 * :n")
            first = c.recv_line()
            assert first.startswith(":chat.test 001 newbie "), first
            c.send("QUIT")
            c.closed()
            assert srv.wait_for(lambda: "newbie" not in srv.server.reg.nicks)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=5)


def test_throttled_client_is_not_taken_for_a_slow_line(make_server) -> None:
    s = make_server(flood_control=True, flood_burst=5, flood_rate=10.0, line_timeout=0.5)
    c = s.client("patient")
    c.sock.sendall("".join(f"PING :p{k}\r\n" for k in range(20)).encode() + b"PING :hal")
    time.sleep(0.05)  # the rest of the line follows a moment later, as over a slow link
    c.sock.sendall(b"f\r\n")
    pongs = [c.expect("PONG")[-1] for _ in range(21)]
    assert pongs[-1].endswith(" half")


def test_whowas_remembers_the_old_nick_after_a_rename(srv: RunningServer) -> None:
    a = srv.client("before")
    a.send("NICK after")
    a.expect("NICK")
    a.send("WHOWAS before")
    assert a.recv_line() == ":chat.test 314 after before ~u 127.0.0.1 * :Real Name"


def test_an_invitation_belongs_to_the_client_not_the_nick(srv: RunningServer) -> None:
    op = srv.client("gate", "#club")
    op.send("MODE #club +i")
    op.expect("MODE")
    guest = srv.client("guest")
    op.send("INVITE guest #club")
    op.expect("341")
    guest.send("QUIT")
    guest.closed()
    assert srv.wait_for(lambda: "guest" not in srv.server.reg.nicks)
    impostor = srv.client("guest")
    impostor.send("JOIN #club")
    assert impostor.recv_line() == ":chat.test 473 guest #club :Cannot join channel (+i)"
    # A plain member's invitation does not get past a ban.
    op.send("MODE #club -i")
    op.expect("MODE")
    member = srv.client("member", "#club")
    op.send("MODE #club +b impostor2")
    op.expect("MODE #club +b")
    banned = srv.client("impostor2")
    member.send("INVITE impostor2 #club")
    member.expect("341")
    banned.expect("INVITE")
    banned.send("JOIN #club")
    assert banned.recv_line() == ":chat.test 474 impostor2 #club :Cannot join channel (+b)"
