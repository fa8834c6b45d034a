from django.contrib.auth import views as auth_views
from django.http import JsonResponse
from django.urls import path


def whoami(request):
    """What Django makes of the request's session: the user it is logged in as, if any."""
    user = request.user
    return JsonResponse({"username": user.get_username() if user.is_authenticated else "",
                         "is_authenticated": user.is_authenticated})


urlpatterns = [
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("whoami/", whoami),
]
