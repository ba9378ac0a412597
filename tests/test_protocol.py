"""The HTTP protocol's own parts (service/server.py), on a recording transport.

The protocol's bounds and deadlines are tested against a real server in test_attacks.py and
test_faults.py; here, the head cork's rules, which a real socket cannot show (how many
writes an answer took).
"""

from __future__ import annotations

from typing import Any

from service.server import HeadCork

HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n"
CHUNKED_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
)


class Recording:
    """A transport that records each call that would reach the socket."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        self.calls.append(("write", data))

    def writelines(self, lines: tuple[bytes, ...]) -> None:
        self.calls.append(("writelines", b"".join(lines)))

    def close(self) -> None:
        self.calls.append(("close", None))
        self.closing = True

    def is_closing(self) -> bool:
        return self.closing

    def get_extra_info(self, name: str) -> str:
        return f"info:{name}"


def cork() -> tuple[HeadCork, Recording, list[str]]:
    transport = Recording()
    closed: list[str] = []
    return HeadCork(transport, lambda: closed.append("closed")), transport, closed  # type: ignore[arg-type]


def test_a_head_with_a_length_leaves_with_its_body_in_one_call() -> None:
    corked, transport, _ = cork()
    corked.armed = True
    corked.write(HEAD)
    assert transport.calls == []
    corked.write(b"{}")
    assert transport.calls == [("writelines", HEAD + b"{}")]
    corked.write(b"more")  # the cork is spent: later writes go straight through
    assert transport.calls[-1] == ("write", b"more")


def test_a_streamed_head_and_the_100_continue_leave_at_once() -> None:
    corked, transport, _ = cork()
    corked.armed = True
    corked.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    assert transport.calls == [("write", b"HTTP/1.1 100 Continue\r\n\r\n")]
    corked.write(CHUNKED_HEAD)  # still armed after the interim answer; not held: chunked
    assert transport.calls[-1] == ("write", CHUNKED_HEAD)
    assert corked.held == b""


def test_an_unarmed_write_is_never_held() -> None:
    corked, transport, _ = cork()
    corked.write(HEAD)  # e.g. the body of an earlier pipelined answer that looks like a head
    assert transport.calls == [("write", HEAD)]


def test_a_held_head_goes_first_on_flush_close_and_any_other_use() -> None:
    corked, transport, closed = cork()
    corked.armed = True
    corked.write(HEAD)
    corked.flush()  # the end of a HEAD answer, which writes no body
    assert transport.calls == [("write", HEAD)]

    corked, transport, closed = cork()
    corked.armed = True
    corked.write(HEAD)
    corked.close()
    assert transport.calls == [("write", HEAD)]
    assert closed == ["closed"]  # the protocol decides how to close (it may linger)

    corked, transport, closed = cork()
    corked.armed = True
    corked.write(HEAD)
    assert corked.get_extra_info("peername") == "info:peername"
    assert transport.calls == [("write", HEAD)]
    assert corked.is_closing() is False
