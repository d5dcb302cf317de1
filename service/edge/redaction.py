"""Keep tokens out of the logs: ``wg_<id>_<secret>`` is logged as ``wg_<id>_***``.

Map clients send their token in the URL (``?access_token=``, Open311's ``?api_key=``), and
uvicorn's access log writes the path with its query. :class:`RedactTokens`, a logging filter,
rewrites every record of the loggers it is installed on (:func:`install_log_redaction`:
uvicorn's access and error loggers and wangge's) before any handler formats it: the value of
those two parameters becomes the token's id (or ``***`` if it is no token), and any other
``wg_<id>_<secret>`` in the message keeps only its id. The id is enough to tell which token
was used (``wangge token list``); the secret never reaches a log file.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from urllib.parse import unquote

__all__ = ["redact", "RedactTokens", "install_log_redaction", "LOGGERS"]

#: Loggers whose records are redacted (and every ``wangge.*`` logger existing at install).
LOGGERS = ("uvicorn.access", "uvicorn.error", "wangge")

_TOKEN = re.compile(r"\bwg_([A-Za-z0-9]{1,64})_[A-Za-z0-9_\-]+")
_PARAM = re.compile(r"(?i)(\b(?:access_token|api_key)=)([^&\s\"'#]*)")


def _param(match: re.Match) -> str:
    value = unquote(match.group(2))
    token = _TOKEN.fullmatch(value)
    return match.group(1) + (f"wg_{token.group(1)}_***" if token else "***")


def redact(text: str) -> str:
    """Return ``text`` with token secrets replaced by ``***`` (ids kept)."""
    if "access_token" not in text and "api_key" not in text and "wg_" not in text:
        return text  # the common case: nothing to scan
    return _TOKEN.sub(r"wg_\1_***", _PARAM.sub(_param, text))


class RedactTokens(logging.Filter):
    """A logging filter redacting tokens in a record's message and arguments, in place.

    The arguments keep their shape (uvicorn's access formatter unpacks them), only the text
    in them changes.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        args = record.args
        if isinstance(args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in args)
        elif isinstance(args, Mapping):
            record.args = {k: redact(v) if isinstance(v, str) else v for k, v in args.items()}
        return True


def install_log_redaction() -> None:
    """Install :class:`RedactTokens` on :data:`LOGGERS` and existing ``wangge.*`` loggers.

    A filter on a logger sees only the records created by that logger, not those its
    children propagate, hence each by name; wangge's loggers are made at import time, so
    they exist when the app is created. Installing twice adds nothing.
    """
    names = set(LOGGERS) | {
        name for name in logging.Logger.manager.loggerDict if name.startswith("wangge.")
    }
    for name in sorted(names):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactTokens) for f in logger.filters):
            logger.addFilter(RedactTokens())
