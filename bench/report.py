"""Readable tables from scenario results: one server, or several side by side."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

Result = dict[str, Any]
Row = tuple[str, Callable[[Result], Any]]


def _get(result: Result, *path: str) -> Any:
    value: Any = result
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def _num(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def _gen(result: Result) -> str:
    gen = result.get("generator") or result.get("setup_generator")
    if not gen:
        return "-"
    mark = " SATURATED" if gen.get("saturated") else ""
    return f"{gen['cpu_util'] * 100:.0f}% of a core{mark}"


def _server_util(result: Result) -> str:
    util = _get(result, "server", "cpu_util")
    # /proc counts CPU in 10 ms ticks: over a quarter second that is a few percent.
    wall = result.get("wall_s")
    rough = " (short run, rough)" if wall is not None and wall < 0.25 else ""
    return "-" if util is None else f"{util * 100:.0f}% of a core{rough}"


def _verdict(result: Result) -> str:
    if result.get("ok"):
        return "PASS"
    failed = [k for k, v in (result.get("checks") or {}).items() if not v]
    why = failed + list(result.get("failures") or [])[:1]
    return "FAIL: " + "; ".join(str(w) for w in why)[:90] if why else "FAIL"


def _before_after(result: Result, key: str) -> str:
    before = _get(result, "server_before", key)
    after = _get(result, "server_after", key)
    return f"{_num(before)} -> {_num(after)}"


def _stalled(result: Result) -> str:
    st = result.get("stalled")
    if not st:
        return "-"
    if not st.get("disconnected"):
        return "not disconnected"
    when = f" at {st['after_s']} s" if st.get("after_s") is not None else ""
    return f"disconnected{when} ({st.get('reason')})"


def _transport(result: Result) -> str:
    tls = result.get("tls") or {}
    if not tls.get("on"):
        return "plaintext"
    what = " ".join(str(tls[k]) for k in ("version", "cipher") if tls.get(k)) or "TLS"
    return what + ("" if tls.get("verified") else " (not verified)")


def _mb(kb: Any) -> str:
    return "-" if kb is None else f"{kb / 1024:,.1f} MB"


ROWS: dict[str, list[Row]] = {
    "fanout": [
        ("transport", _transport),
        ("deliveries/s", lambda r: _num(r.get("deliveries_per_s"))),
        ("deliveries (got/expected)",
         lambda r: f"{_num(r.get('deliveries'))}/{_num(r.get('deliveries_expected'))}"),
        ("lost / duplicated / reordered / stray",
         lambda r: f"{_num(r.get('lost'))} / {_num(r.get('duplicates'))} / "
                   f"{_num(r.get('reordered'))} / {_num(r.get('unexpected'))}"),
        ("latency p50 / p99 ms",
         lambda r: f"{_num(_get(r, 'latency_ms', 'p50'), 2)} / "
                   f"{_num(_get(r, 'latency_ms', 'p99'), 2)}"),
        ("server CPU us/delivery", lambda r: _num(r.get("server_cpu_us_per_delivery"), 2)),
        ("server CPU", _server_util),
        ("generator CPU", _gen),
        ("verdict", _verdict),
    ],
    "many": [
        ("transport", _transport),
        ("connected", lambda r: _num(r.get("connected"))),
        ("setup time s", lambda r: _num(r.get("setup_s"))),
        ("RSS per connection KB", lambda r: _num(r.get("rss_kb_per_connection"))),
        ("one message to all, worst ms", lambda r: _num(r.get("worst_all_reached_ms"))),
        ("threads", lambda r: _before_after(r, "threads")),
        ("fds", lambda r: _before_after(r, "fds")),
        ("generator CPU (setup)", _gen),
        ("verdict", _verdict),
    ],
    "slow": [
        ("healthy lost / dup / reordered / stray",
         lambda r: f"{_num(r.get('lost'))} / {_num(r.get('duplicates'))} / "
                   f"{_num(r.get('reordered'))} / {_num(r.get('unexpected'))}"),
        ("p99 first 3 s / last 3 s ms",
         lambda r: f"{_num(r.get('p99_first_3s_ms'), 2)} / {_num(r.get('p99_last_3s_ms'), 2)}"),
        ("stalled client", _stalled),
        ("server RSS growth", lambda r: _mb(_get(r, "memory", "growth_kb"))),
        ("server CPU", _server_util),
        ("generator CPU", _gen),
        ("verdict", _verdict),
    ],
    "churn": [
        ("cycles ok / failed",
         lambda r: f"{_num(r.get('cycles_done'))} / {_num(r.get('cycles_failed'))}"),
        ("cycles/s", lambda r: _num(r.get("cycles_per_s"))),
        ("cycle p50 / p99 ms",
         lambda r: f"{_num(_get(r, 'cycle_ms', 'p50'), 2)} / "
                   f"{_num(_get(r, 'cycle_ms', 'p99'), 2)}"),
        ("threads before -> after", lambda r: _before_after(r, "threads")),
        ("fds before -> after", lambda r: _before_after(r, "fds")),
        ("RSS KB before -> after", lambda r: _before_after(r, "rss_kb")),
        ("generator CPU", _gen),
        ("verdict", _verdict),
    ],
    "handshakes": [
        ("transport", _transport),
        ("connections ok / failed",
         lambda r: f"{_num(r.get('handshakes_done'))} / {_num(r.get('handshakes_failed'))}"),
        ("handshakes/s", lambda r: _num(r.get("handshakes_per_s"))),
        ("connect+handshake p50 / p99 ms",
         lambda r: f"{_num(_get(r, 'handshake_ms', 'p50'), 2)} / "
                   f"{_num(_get(r, 'handshake_ms', 'p99'), 2)}"),
        ("server CPU us/connection", lambda r: _num(r.get("server_cpu_us_per_handshake"))),
        ("server CPU", _server_util),
        ("threads before -> after", lambda r: _before_after(r, "threads")),
        ("fds before -> after", lambda r: _before_after(r, "fds")),
        ("generator CPU", _gen),
        ("verdict", _verdict),
    ],
}


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), rule, *(line(row) for row in rows)])


def scenario_title(result: Result) -> str:
    p = result.get("params") or {}
    name = result.get("scenario", "?")
    if not p:
        return str(result.get("name") or name)
    if name == "fanout":
        return (f"fanout: {p.get('clients')} clients, {p.get('senders')} senders x "
                f"{p.get('messages')} messages, window {p.get('window')}")
    if name == "many":
        return f"many: {p.get('clients')} clients in one room"
    if name == "slow":
        return (f"slow: {p.get('clients')} clients, 1 stalled, others {p.get('rate'):g} msg/s "
                f"x {p.get('size')} B for {p.get('duration'):g} s")
    if name == "churn":
        return f"churn: {p.get('cycles')} cycles from {p.get('parallel')} parallel clients"
    if name == "handshakes":
        return (f"handshakes: {p.get('clients')} connections, {p.get('parallel')} at once, "
                "each closed after QUIT")
    return str(name)


def format_result(result: Result) -> str:
    """A two-column table for one scenario run against one server."""
    rows = [(label, fn(result)) for label, fn in ROWS.get(result.get("scenario", ""), [])]
    return f"{scenario_title(result)}\n" + _table(["metric", result.get("label") or "value"],
                                                  rows)


def side_by_side(results: Sequence[Result]) -> str:
    """One table per scenario title, one column per server label."""
    out: list[str] = []
    groups: dict[str, list[Result]] = {}
    for result in results:
        groups.setdefault(result.get("name") or scenario_title(result), []).append(result)
    for group in groups.values():
        title = next((scenario_title(r) for r in group if r.get("params")),
                     group[0].get("name", "?"))
        runs = max(int(r.get("runs", 1)) for r in group)
        if runs > 1:
            title += f" (median of {runs} runs each)"
        rows = ROWS.get(group[0].get("scenario", ""), [])
        header = ["metric"] + [r.get("label") or "?" for r in group]
        body = [[label] + [fn(r) for r in group] for label, fn in rows]
        out.append(f"### {title}\n\n" + _table(header, body))
    return "\n\n".join(out)
