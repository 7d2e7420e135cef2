"""The web server (`digitlab serve`): the demo page and API (`app`), explanations over HTTP, micro-batching
and worker processes.
"""

from .app import Limits, create_app, serve

__all__ = [
    "Limits",
    "create_app",
    "serve",
]
