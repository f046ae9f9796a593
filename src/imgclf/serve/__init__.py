"""The web service and its page: `imgclf serve RUN` (see `imgclf.serve.app`)."""

from imgclf.serve.app import ServeOptions, create_app, serve

__all__ = ["ServeOptions", "create_app", "serve"]
