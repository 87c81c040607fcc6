"""The Logger protocol, DefaultLogger (loguru) and NullLogger (design.md §7)."""

from __future__ import annotations

import logging

import pytest
from loguru import logger as loguru_logger

from gostage import DefaultLogger, Logger, NullLogger


def test_default_logger_writes_through_loguru_with_percent_args() -> None:
    lines: list[str] = []
    sink = loguru_logger.add(
        lambda m: lines.append(m.record["level"].name + " " + m.record["message"]), level="DEBUG"
    )
    try:
        log = DefaultLogger()
        log.debug("d %s", 1)
        log.info("i %d%%", 50)
        log.warning("braces {stay} literal")
        log.error("e")
    finally:
        loguru_logger.remove(sink)
    assert lines == ["DEBUG d 1", "INFO i 50%", "WARNING braces {stay} literal", "ERROR e"]


def test_default_logger_binds_its_name() -> None:
    names: list[str] = []
    sink = loguru_logger.add(lambda m: names.append(m.record["extra"]["name"]), level="INFO")
    try:
        DefaultLogger("jobs").info("x")
    finally:
        loguru_logger.remove(sink)
    assert names == ["jobs"]


def test_null_logger_and_stdlib_logger_satisfy_the_protocol(
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert isinstance(NullLogger(), Logger)
    assert isinstance(DefaultLogger(), Logger)
    std = logging.getLogger("gostage-test")
    assert isinstance(std, Logger)
    NullLogger().error("dropped %s", "quietly")
    with caplog.at_level(logging.INFO):
        std.info("hello %s", "world")
    assert caplog.messages == ["hello world"]
