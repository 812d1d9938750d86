"""The Keel server: ``create_app(settings)`` mounts every capability's router behind one app."""

from keel.server.app import create_app

__all__ = ["create_app"]
