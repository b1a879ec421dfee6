"""ferrule: a production WSGI server with a Rust core.

Run from the command line (``ferrule module:app``) or from Python::

    import ferrule
    ferrule.run(app, bind="127.0.0.1:8000")
"""

from ferrule import log as _log
from ferrule._ferrule import BindError, ConfigError, FileWrapper, TlsError, __version__
from ferrule.egress import counts as egress_counts
from ferrule.settings import Settings, run

# An app imported before ``ferrule.run`` (or the master's set-up) already finds the
# ``gunicorn.error`` handler and level its logging recipe copies.
_log.attach_handlers("info")

__all__ = ["BindError", "ConfigError", "FileWrapper", "Settings", "TlsError", "__version__", "egress_counts", "run"]
