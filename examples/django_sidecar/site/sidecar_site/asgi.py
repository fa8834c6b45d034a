"""ASGI entry point for daphne: Django's HTTP views, and Channels consumers behind its
AuthMiddlewareStack (the Python twin of the Rust server's sockets)."""
import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sidecar_site.settings")

from django.core.asgi import get_asgi_application  # noqa: E402

django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402

from sidecar_site.consumers import ChatConsumer, WhoamiConsumer  # noqa: E402

application = ProtocolTypeRouter({
    "http": django_asgi_app,
    "websocket": AuthMiddlewareStack(URLRouter([
        path("ws/whoami/", WhoamiConsumer.as_asgi()),
        path("ws/chat/<slug:room>/", ChatConsumer.as_asgi()),
    ])),
})
