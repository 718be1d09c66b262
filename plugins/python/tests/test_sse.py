"""The server-sent-events reader on byte streams shaped like heie serve's (and like what SSE allows)."""

from __future__ import annotations

import io

from heie_client.http_transport.sse import Message, read_messages


def _read(text: bytes) -> list[Message]:
    return list(read_messages(io.BytesIO(text)))


def test_named_events_with_keep_alive_comments_between() -> None:
    body = b': keep-alive\n\nevent: started\ndata: {"started":{}}\n\n:\n\nevent: done\ndata: {"done":{}}\n\n'
    assert _read(body) == [Message("started", '{"started":{}}'), Message("done", '{"done":{}}')]


def test_multi_line_data_crlf_and_no_space_after_colon() -> None:
    body = b"event:score\r\ndata:a\r\ndata: b\r\n\r\ndata: plain\n\n"
    assert _read(body) == [Message("score", "a\nb"), Message("message", "plain")]


def test_a_message_cut_off_by_the_end_of_the_body_is_dropped() -> None:
    assert _read(b'event: started\ndata: {}\n\nevent: done\ndata: {"do') == [Message("started", "{}")]
    assert _read(b"") == []


def test_utf8_text_survives() -> None:
    assert _read("data: {\"t\":\"main gauche — ünïcode ✋\"}\n\n".encode()) == [Message("message", '{"t":"main gauche — ünïcode ✋"}')]
