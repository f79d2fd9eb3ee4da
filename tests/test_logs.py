"""Accord's log lines: one line per record, whatever a peer put in the strings logged."""

from __future__ import annotations

import logging

from accord.logs import configure_logging, escape_control


def test_control_characters_are_escaped_so_no_line_can_be_forged(capsys) -> None:
    configure_logging("INFO")
    forged = "col\n12:00:00 INFO    accord.aggregator: round 9 of 10 done\r\x1b[2K\u2028"
    logging.getLogger("accord.aggregator").warning("refused result from %s: %s", forged, "metric 'a\nb'")
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("accord.aggregator").exception("failed for %s", "x\ny")
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert "\x1b" not in out and "\r" not in out and "\u2028" not in out
    assert lines[0].endswith(r"refused result from col\n12:00:00 INFO    accord.aggregator: round 9 of 10 done\r\x1b[2K\u2028: metric 'a\nb'")
    assert lines[1].endswith(r"failed for x\ny") and lines[2] == "Traceback (most recent call last):"  # tracebacks keep their lines


def test_escape_control_leaves_printable_text_alone() -> None:
    assert escape_control("round 3  accuracy=0.9 é ü 日本") == "round 3  accuracy=0.9 é ü 日本"
    assert escape_control("a\tb\x00c\x7f") == r"a\tb\x00c\x7f"
