"""Errors of the p2p layer (see ``node.errors`` for when to raise which kind)."""

from __future__ import annotations

from node.errors import RecoverableError


class PeerUnavailable(RecoverableError, ConnectionError):
    """A peer could not be dialled or a stream to it could not be opened."""


class PeerBanned(PeerUnavailable):
    """The peer is banned for too many rejected messages: we neither dial it nor accept it until the ban ends."""


class RequestTimeout(RecoverableError, TimeoutError):
    """A request/response exchange did not complete before its deadline."""


class NotRunning(RecoverableError, RuntimeError):
    """The host is not started (or already stopped)."""
