from asgiref.sync import async_to_sync
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.http import JsonResponse
from django.urls import path
from django.views.decorators.http import require_POST


def whoami(request):
    """What Django makes of the request's session: the user it is logged in as, if any."""
    user = request.user
    return JsonResponse({"username": user.get_username() if user.is_authenticated else "",
                         "is_authenticated": user.is_authenticated})


@require_POST
@login_required
def say(request, room):
    """Sends a message to a chat room's sockets, served by the Rust server, through channels_redis."""
    from channels.layers import get_channel_layer

    message = request.POST.get("message", "")
    async_to_sync(get_channel_layer().group_send)(f"chat_{room}", {"type": "chat.message", "message": message})
    return JsonResponse({"sent": message})


urlpatterns = [
    path("chat/<slug:room>/say/", say),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("whoami/", whoami),
]
