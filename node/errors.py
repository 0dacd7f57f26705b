"""Error hierarchy of the node.

Raise a ``RecoverableError`` subclass when the caller can retry or carry on (a race lost on-chain, a peer that
went away, an RPC endpoint that is down for now); raise an ``UnrecoverableError`` subclass for bugs and for
states the node must not continue from (wrong chain, contract code missing, corrupt storage). Concrete errors
mix in a stdlib type so callers can catch either, e.g. ``class InvalidOffer(NodeError, ValueError)``.
"""

from __future__ import annotations


class NodeError(Exception):
    """Base of every error the node raises on purpose."""


class RecoverableError(NodeError):
    """The operation failed but the node may retry or continue."""


class UnrecoverableError(NodeError):
    """A bug or a misconfiguration: stop loudly."""


class ConfigError(UnrecoverableError, ValueError):
    """Invalid configuration or CLI arguments."""


class InvalidMessage(RecoverableError, ValueError):
    """A peer message failed decoding or validation."""


class ChainError(RecoverableError):
    """An RPC or transaction failure that can be retried or reconciled."""


class ChainMismatch(UnrecoverableError):
    """Chain id or contract code is not what the deployments file says."""
