"""The web service and its page: `imgclf serve RUN` (see `imgclf.serve.app`)."""

from imgclf.serve.app import create_app
from imgclf.serve.options import ServeOptions
from imgclf.serve.server import serve

__all__ = ["ServeOptions", "create_app", "serve"]
