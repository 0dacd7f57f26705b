"""Structured logging: key-value ``extra=`` fields, and a filter that redacts secrets wherever they appear."""

from __future__ import annotations

import logging
import re
import sys

_SECRET_KEYS = ("key", "secret", "token", "password", "signature", "sig", "private")
_HEX_SECRET = re.compile(r"0x[0-9a-fA-F]{64,}")  # private keys, signatures: never in logs
_RESERVED = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}
# Public identifiers that look like 32-byte hex but are not secrets: shown as they are.
_PUBLIC_IDS = {"offer_id", "tx", "tx_hash", "block_hash", "offer_hash", "head"}


class RedactingFilter(logging.Filter):
    """Drops values of secret-looking fields and masks long hex strings (keys, signatures) in messages."""

    def filter(self, record: logging.LogRecord) -> bool:
        for k in list(record.__dict__):
            if k in _RESERVED:
                continue
            if any(s in k.lower() for s in _SECRET_KEYS) and not k.lower().endswith(("_id", "_count")):
                record.__dict__[k] = "<redacted>"
            elif k in _PUBLIC_IDS:
                continue
            elif isinstance(record.__dict__[k], str):
                record.__dict__[k] = _HEX_SECRET.sub("0x<redacted>", record.__dict__[k])
        if isinstance(record.msg, str):
            record.msg = _HEX_SECRET.sub("0x<redacted>", record.msg)
        return True


class KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = _HEX_SECRET.sub("0x<redacted>", record.getMessage())
        base = f"{self.formatTime(record, '%H:%M:%S')} {record.levelname:<5} {record.name}: {message}"
        extras = {k: v for k, v in record.__dict__.items() if k not in _RESERVED}
        if extras:  # already filtered by RedactingFilter (public ids kept, other long hex masked)
            base += " " + " ".join(f"{k}={v}" for k, v in sorted(extras.items()))
        if record.exc_info:
            base += "\n" + _HEX_SECRET.sub("0x<redacted>", self.formatException(record.exc_info))
        return base


def setup_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(KeyValueFormatter())
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("web3", "libp2p", "multiaddr", "aiohttp.access"):  # chatty at INFO; their warnings still show
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
