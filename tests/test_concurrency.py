"""Many real clients at once: exactly-once, in-order delivery and exact counts."""

from __future__ import annotations

import random
import socket
import threading
import time

from conftest import LineClient, RunningServer, fd_count

N_CLIENTS = 50
N_MESSAGES = 20


def test_fifty_clients_join_talk_rename_leave(srv: RunningServer) -> None:
    """50 clients in one room; each sends N messages, renames midway, then some leave.

    Every client must receive every other client's messages exactly once and in the sender's
    order; counts in NAMES/LUSERS afterwards are exact.
    """
    clients = [srv.client(f"c{i}") for i in range(N_CLIENTS)]
    for c in clients:
        c.send("JOIN #chat")
    for c in clients:
        c.lines_until("366")
    assert srv.wait_for(lambda: len(srv.server.reg.channels["#chat"].members) == N_CLIENTS)
    # Every client's view of joins settles before messages start.
    barrier = threading.Barrier(N_CLIENTS)
    received: dict[int, list[tuple[int, int]]] = {i: [] for i in range(N_CLIENTS)}
    errors: list[str] = []

    def run(i: int) -> None:
        c = clients[i]
        try:
            barrier.wait(timeout=10)
            for k in range(N_MESSAGES):
                c.send(f"PRIVMSG #chat :m {i} {k}")
                if k == N_MESSAGES // 2:
                    c.send(f"NICK r{i}")
            c.send(f"PRIVMSG #chat :done {i}")
            done = 0
            deadline = time.monotonic() + 30
            while done < N_CLIENTS - 1 and time.monotonic() < deadline:
                line = c.recv_line(timeout=20)
                parts = line.split(" ")
                if parts[1] != "PRIVMSG":
                    continue
                text = line.split(" :", 1)[1].split(" ")
                if text[0] == "m":
                    received[i].append((int(text[1]), int(text[2])))
                elif text[0] == "done":
                    done += 1
        except Exception as exc:  # surfaced by the main thread
            errors.append(f"client {i}: {exc!r}")

    threads = [threading.Thread(target=run, args=(i,)) for i in range(N_CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors[:5]
    for i, got in received.items():
        expected = {j for j in range(N_CLIENTS) if j != i}
        per_sender: dict[int, list[int]] = {}
        for j, k in got:
            per_sender.setdefault(j, []).append(k)
        assert set(per_sender) == expected, f"client {i} missed senders"
        for j, seq in per_sender.items():
            assert seq == list(range(N_MESSAGES)), f"client {i} from {j}: {seq}"
    # Half of them leave in different ways; the counts must be exact afterwards.
    for i, c in enumerate(clients[: N_CLIENTS // 2]):
        if i % 3 == 0:
            c.send("PART #chat")
        elif i % 3 == 1:
            c.send("QUIT :bye")
        else:
            c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            c.close()  # RST
    stay = clients[N_CLIENTS // 2:]
    assert srv.wait_for(lambda: len(srv.server.reg.channels["#chat"].members) == len(stay))
    observer = stay[0]
    observer.send("NAMES #chat")
    names = []
    for line in observer.lines_until("366"):
        if " 353 " in line:
            names += line.split(" :", 1)[1].split() if " :" in line else [line.split(" ")[-1]]
    assert sorted(n.lstrip("@+") for n in names) == sorted(
        f"r{i}" for i in range(N_CLIENTS // 2, N_CLIENTS))
    parted = len([i for i in range(N_CLIENTS // 2) if i % 3 == 0])
    assert srv.wait_for(lambda: srv.server.reg.user_count == len(stay) + parted)
    observer.send("LUSERS")
    lines = observer.lines_until("266")
    users = len(stay) + parted  # those who only parted are still online
    assert lines[0] == (f":chat.test 251 r{N_CLIENTS // 2} :There are {users} users and 0 "
                        "invisible on 1 servers")


def test_every_roommate_sees_one_quit_per_abrupt_disconnect(srv: RunningServer) -> None:
    watcher = srv.client("watcher", "#r")
    victims = [srv.client(f"v{i}", "#r") for i in range(10)]
    for _ in victims:
        watcher.expect("JOIN")
    for i, v in enumerate(victims):
        if i % 2:
            v.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        v.send(b"PRIVMSG #r :half a li")  # mid-line
        v.close()
    quits = [watcher.expect("QUIT")[-1] for _ in victims]
    assert sorted(q.split("!")[0][1:] for q in quits) == sorted(f"v{i}" for i in range(10))
    watcher.no_line()
    assert srv.wait_for(lambda: len(srv.server.reg.clients) == 1)


def test_no_thread_or_fd_leak_after_1000_cycles(srv: RunningServer) -> None:
    warm = srv.client("warm", "#churn")
    warm.no_line()
    base_threads = threading.active_count()
    base_fds = fd_count()
    rng = random.Random(1234)
    addr = srv.address

    def cycle(k: int) -> None:
        s = socket.create_connection(addr, timeout=5)
        try:
            kind = k % 4
            if kind == 0:
                s.sendall(f"NICK n{k}\r\nUSER u 0 * :r\r\nJOIN #churn\r\nQUIT\r\n".encode())
                while s.recv(65536):
                    pass
            elif kind == 1:
                s.sendall(f"NICK n{k}\r\nUSER u 0 * :r\r\nJOIN #churn\r\n".encode())
            elif kind == 2:
                s.sendall(b"NICK half")  # mid-registration, mid-line
            else:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                s.sendall(f"NICK r{k}\r\nUSER u 0 * :r\r\n".encode()[: rng.randrange(1, 20)])
        finally:
            s.close()

    workers = []
    for w in range(10):
        def work(w: int = w) -> None:
            for k in range(w, 1000, 10):
                cycle(k)
        workers.append(threading.Thread(target=work))
    for t in workers:
        t.start()
    for t in workers:
        t.join(timeout=120)
    assert srv.wait_for(lambda: len(srv.server.reg.clients) == 1, timeout=20)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (threading.active_count() > base_threads
                                           or fd_count() > base_fds):
        time.sleep(0.05)
    assert threading.active_count() == base_threads
    assert fd_count() == base_fds
    assert list(srv.server.reg.channels) == ["#churn"]
    assert len(srv.server.reg.channels["#churn"].members) == 1


def test_client_that_never_reads_is_cut_and_others_unaffected(make_server) -> None:
    s = make_server(sendq=64 * 1024)
    stuck = LineClient(s.address)
    stuck.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.register("stuck")
    stuck.join("#r")
    talker = s.client("talker", "#r")
    listener = s.client("listener", "#r")
    talker.expect("JOIN")
    payload = "x" * 400
    got: list[int] = []
    quits: list[str] = []

    def listen() -> None:
        while len(got) < 2000 or not quits:
            line = listener.recv_line(timeout=20)
            if " PRIVMSG " in line:
                got.append(int(line.split(" :", 1)[1].split(" ")[0]))
            elif " QUIT " in line:
                quits.append(line)

    reader = threading.Thread(target=listen)
    reader.start()
    start = time.monotonic()
    for k in range(2000):
        talker.send(f"PRIVMSG #r :{k} {payload}")
        if k % 100 == 99:  # a round trip now and then, so the talker is never flooded
            talker.send("PING :sync")
            talker.expect("PONG")
    reader.join(timeout=30)
    assert got == list(range(2000))
    assert quits == [":stuck!~u@127.0.0.1 QUIT :SendQ exceeded"]
    assert time.monotonic() - start < 30
    assert s.wait_for(lambda: "stuck" not in s.server.reg.nicks)
