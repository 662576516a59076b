"""Bad input gets a defined outcome and never reaches anyone else."""

from __future__ import annotations

import resource
import socket
import time

from conftest import RunningServer


def _pair(srv: RunningServer):
    bad = srv.client("bad", "#r")
    good = srv.client("good", "#r")
    bad.expect("JOIN")
    return bad, good


def test_invalid_utf8_is_rejected_and_not_relayed(srv: RunningServer) -> None:
    bad, good = _pair(srv)
    bad.send(b"PRIVMSG #r :caf\xe9\r\n")
    assert bad.recv_line() == ":chat.test FAIL PRIVMSG INVALID_UTF8 :Message rejected: text must be UTF-8"
    bad.send(b"\xff\xfe\r\n")
    assert bad.recv_line() == ":chat.test FAIL * INVALID_UTF8 :Message rejected: text must be UTF-8"
    good.no_line()


def test_overlong_line_gets_417(srv: RunningServer) -> None:
    bad, good = _pair(srv)
    bad.send(b"PRIVMSG #r :" + b"x" * 600 + b"\r\n")
    assert bad.recv_line() == ":chat.test 417 bad :Input line was too long"
    bad.send(b"PRIVMSG #r :" + b"y" * 20000 + b"\r\n")
    assert bad.recv_line() == ":chat.test 417 bad :Input line was too long"
    good.no_line()
    bad.no_line()  # the connection still works


def test_nul_and_cr_inside_a_line(srv: RunningServer) -> None:
    bad, good = _pair(srv)
    bad.send(b"PRIVMSG #r :a\x00b\r\n")
    assert bad.recv_line() == ":chat.test 400 bad PRIVMSG :Malformed line: NUL, CR or LF inside the line"
    bad.send(b"PRIVMSG #r :a\rQUIT :x\r\n")
    assert bad.recv_line() == ":chat.test 400 bad PRIVMSG :Malformed line: NUL, CR or LF inside the line"
    good.no_line()


def test_empty_and_blank_lines_are_ignored(srv: RunningServer) -> None:
    bad, good = _pair(srv)
    bad.send(b"\r\n\n   \r\n")
    bad.no_line()
    good.no_line()


def test_bare_newline_framing_and_split_across_packets(srv: RunningServer) -> None:
    a, b = _pair(srv)
    a.sock.sendall(b"PRIVMSG #r :one\nPRIV")
    time.sleep(0.05)  # deliberately split the second line across two TCP segments
    a.sock.sendall(b"MSG #r :two\r\n")
    assert b.recv_line().endswith("PRIVMSG #r :one")
    assert b.recv_line().endswith("PRIVMSG #r :two")


def test_ten_megabytes_without_newline_costs_no_memory(srv: RunningServer) -> None:
    bad, good = _pair(srv)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    chunk = b"z" * 65536
    for _ in range(160):  # 10 MB
        bad.sock.sendall(chunk)
    bad.send(b"\r\n")
    assert bad.recv_line() == ":chat.test 417 bad :Input line was too long"
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert after - before < 8 * 1024  # KiB: far less than the 10 MB sent
    good.no_line()


def test_unfinished_line_times_out(make_server) -> None:
    s = make_server(line_timeout=0.3)
    c = s.client("slowloris")
    c.sock.sendall(b"PRIVMSG #r :drip")
    for _ in range(3):
        time.sleep(0.1)
        c.sock.sendall(b".")
    assert c.expect("ERROR")[-1] == "ERROR :Closing Link: 127.0.0.1 (Read timeout: line not finished)"
    assert c.closed()


def test_injection_attempts_stay_inside_their_parameter(srv: RunningServer) -> None:
    bad, good = _pair(srv)
    # A trailing parameter can hold ':' and spaces but the relayed line stays one line.
    bad.send("PRIVMSG #r ::good!x@y PRIVMSG #r :forged")
    assert good.recv_line() == ":bad!~u@127.0.0.1 PRIVMSG #r ::good!x@y PRIVMSG #r :forged"
    bad.send("TOPIC #r :topic\twith tab")
    assert good.recv_line() == ":bad!~u@127.0.0.1 TOPIC #r :topic\twith tab"
    bad.send("NICK :a\tb")
    assert bad.expect("432")[-1].startswith(":chat.test 432 bad ")
    bad.send("JOIN :#a b,#c")
    assert bad.recv_line() == ":chat.test 403 bad #a :No such channel"
    assert bad.lines_until("366")[0] == ":bad!~u@127.0.0.1 JOIN #c"
    bad.send("MODE #r :+ :x")
    line = bad.recv_line()
    assert line.startswith(":chat.test 472 bad ")
    assert len(line.split(" ")) >= 4


def test_user_with_hostile_username_is_sanitised(srv: RunningServer) -> None:
    c = srv.client()
    c.send("NICK weird")
    c.send("USER :a@b!c 0 * :Real")
    c.send("USER a@b!c 0 * :Real")
    lines = c.expect("001")
    assert lines[-1] == ":chat.test 001 weird :Welcome to the TestNet Network, weird!~abc@127.0.0.1"


def test_handler_exception_is_answered_and_connection_survives(srv: RunningServer,
                                                               monkeypatch) -> None:
    from chatroom import handlers

    def broken(srv_, c, msg):
        raise RuntimeError("boom")

    monkeypatch.setitem(handlers.COMMANDS, "TIME", handlers.Command(broken))
    c = srv.client("victim")
    c.send("TIME")
    assert c.recv_line() == ":chat.test 400 victim TIME :Internal error, command dropped"
    c.no_line()


def test_rst_mid_line_while_others_chat(srv: RunningServer) -> None:
    a, b = _pair(srv)
    for _ in range(20):
        s = socket.create_connection(srv.address)
        s.sendall(b"NICK rst\r\nUSER u 0 * :r\r\nJOIN #r\r\nPRIVMSG #r :partial")
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()
        a.send("PRIVMSG #r :still fine")
        assert b.expect("PRIVMSG")[-1].endswith("PRIVMSG #r :still fine")
    assert srv.wait_for(lambda: len(srv.server.reg.clients) == 2)
