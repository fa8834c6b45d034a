"""Settings shared with the Rust server through the environment (the same DJANGO_* variables
`DjangoConfig::from_env` reads)."""
import os
from pathlib import Path
from urllib.parse import unquote, urlparse

BASE_DIR = Path(__file__).resolve().parent.parent


def env_list(name, default=""):
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


def database(url):
    """A DATABASES entry from a DATABASE_URL: postgres://user:pw@host:port/name or sqlite:////abs."""
    if url.startswith("sqlite:///"):
        return {"ENGINE": "django.db.backends.sqlite3", "NAME": url[len("sqlite:///"):]}
    parsed = urlparse(url)
    if parsed.scheme not in ("postgres", "postgresql"):
        raise ValueError(f"unsupported DJANGO_DATABASE_URL scheme {parsed.scheme!r}")
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": parsed.path.lstrip("/"),
        "USER": unquote(parsed.username or ""),
        "PASSWORD": unquote(parsed.password or ""),
        "HOST": parsed.hostname or "",
        "PORT": str(parsed.port or ""),
    }


SECRET_KEY = os.environ["DJANGO_SECRET_KEY"]
SECRET_KEY_FALLBACKS = env_list("DJANGO_SECRET_KEY_FALLBACKS")
DEBUG = False
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,testserver")

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "sidecar_site",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]
ROOT_URLCONF = "sidecar_site.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "OPTIONS": {"context_processors": ["django.template.context_processors.request"]},
    }
]
DATABASES = {"default": database(os.environ.get("DJANGO_DATABASE_URL", f"sqlite:///{BASE_DIR / 'db.sqlite3'}"))}
# Django's default (0) opens a database connection per request; bench/django.sh also measures
# persistent connections.
DATABASES["default"]["CONN_MAX_AGE"] = int(os.environ.get("DJANGO_CONN_MAX_AGE", "0"))
SESSION_ENGINE = os.environ.get("DJANGO_SESSION_ENGINE", "django.contrib.sessions.backends.db")
SESSION_COOKIE_NAME = os.environ.get("DJANGO_SESSION_COOKIE_NAME", "sessionid")
PASSWORD_HASHERS = [
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
    "django.contrib.auth.hashers.PBKDF2SHA1PasswordHasher",
    "django.contrib.auth.hashers.Argon2PasswordHasher",
    "django.contrib.auth.hashers.BCryptSHA256PasswordHasher",
    "django.contrib.auth.hashers.ScryptPasswordHasher",
]
LOGIN_REDIRECT_URL = "/whoami/"
LOGOUT_REDIRECT_URL = "/accounts/login/"
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

if os.environ.get("DJANGO_CHANNEL_LAYER_URL"):
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                "hosts": [os.environ["DJANGO_CHANNEL_LAYER_URL"]],
                "prefix": os.environ.get("DJANGO_CHANNEL_LAYER_PREFIX", "asgi"),
            },
        }
    }

if os.environ.get("DJANGO_CACHE_URL"):
    CACHES = {
        "default": {
            # Django's own RedisCache, or django-redis's (`django_redis.cache.RedisCache`): the
            # Rust side reads and writes both (same key layout, pickled dictionaries).
            "BACKEND": os.environ.get("DJANGO_CACHE_BACKEND", "django.core.cache.backends.redis.RedisCache"),
            "LOCATION": os.environ["DJANGO_CACHE_URL"],
            "KEY_PREFIX": os.environ.get("DJANGO_CACHE_KEY_PREFIX", ""),
        }
    }
