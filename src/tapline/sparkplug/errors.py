"""Exceptions raised by the Sparkplug package.

Tree (every error says what was wrong, with the offending value, so a caller can count and log it)::

    SparkplugError            base; catch this at the IO boundary to count and drop a bad message
    ├── TopicError            a topic that is not ``spBv1.0/{group}/{TYPE}/{node}[/{device}]`` or
    │                         ``spBv1.0/STATE/{host_id}``, or that names another node than expected
    ├── PayloadError          malformed protobuf or STATE JSON, a value of the wrong type or out of
    │                         range for its datatype, an unknown metric or alias, an oversize payload
    └── SessionError          an edge-node call the session state does not allow (data before birth,
                              a point that was never declared in a birth) — a bug in the caller

The decoders never raise anything but these (the host's ingest loop relies on it: a peer can send any
bytes at all).
"""

from __future__ import annotations

__all__ = ["PayloadError", "SessionError", "SparkplugError", "TopicError"]


class SparkplugError(Exception):
    """Base of every error raised by ``tapline.sparkplug``."""


class TopicError(SparkplugError):
    """The MQTT topic is not a valid Sparkplug B topic (or not the one expected)."""


class PayloadError(SparkplugError):
    """The payload is malformed, oversize, or carries a value its datatype does not allow."""


class SessionError(SparkplugError):
    """The edge-node session was asked for a message its current state does not allow."""
