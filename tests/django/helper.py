"""Drives the real Django of examples/django_sidecar/site for tests/django.rs.

Usage: helper.py COMMAND ARGS...; settings come from the DJANGO_* environment variables. Prints
one line of JSON (or nothing) on success; exits non-zero with the error otherwise.
"""
import json
import os
import sys
from datetime import timedelta
from pathlib import Path

SITE = Path(__file__).resolve().parents[2] / "examples" / "django_sidecar" / "site"
sys.path.insert(0, str(SITE))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sidecar_site.settings")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.contrib.auth.hashers import make_password  # noqa: E402
from django.contrib.sessions.models import Session  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.test import Client  # noqa: E402
from django.utils import timezone  # noqa: E402

User = get_user_model()


def client(cookie=None):
    c = Client(enforce_csrf_checks=False)
    if cookie:
        c.cookies[settings.SESSION_COOKIE_NAME] = cookie
    return c


def main(command, *args):
    if command == "createdb":
        import psycopg

        (name,) = args
        with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            conn.execute(f'CREATE DATABASE "{name}"')
    elif command == "dropdb":
        import psycopg

        (name,) = args
        with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    elif command == "migrate":
        call_command("migrate", verbosity=0, interactive=False)
    elif command == "create-user":
        name, password, hasher = args
        user = User(username=name, is_active=True)
        user.password = make_password(password, hasher=hasher)
        user.save()
        print(json.dumps({"id": user.pk}))
    elif command == "login":
        # Through Django's own LoginView, as a browser would post its form.
        name, password = args
        c = client()
        response = c.post("/accounts/login/", {"username": name, "password": password})
        if response.status_code != 302:
            raise SystemExit(f"login failed: {response.status_code}")
        print(json.dumps({"cookie": c.cookies[settings.SESSION_COOKIE_NAME].value}))
    elif command == "whoami":
        (cookie,) = args
        print(client(cookie).get("/whoami/").content.decode())
    elif command == "say":
        # A Django view's group_send, through channels_redis.
        cookie, room, message = args
        response = client(cookie).post(f"/chat/{room}/say/", {"message": message})
        if response.status_code != 200:
            raise SystemExit(f"say failed: {response.status_code}")
    elif command == "logout":
        (cookie,) = args
        client(cookie).post("/accounts/logout/")
    elif command == "grant":
        # A permission given to the user directly, or through a group when one is named.
        from django.contrib.auth.models import Group, Permission

        name, perm, *group = args
        app_label, codename = perm.split(".")
        permission = Permission.objects.get(content_type__app_label=app_label, codename=codename)
        user = User.objects.get(username=name)
        if group:
            grouped, _ = Group.objects.get_or_create(name=group[0])
            grouped.permissions.add(permission)
            user.groups.add(grouped)
        else:
            user.user_permissions.add(permission)
    elif command == "make-superuser":
        (name,) = args
        User.objects.filter(username=name).update(is_superuser=True, is_staff=True)
    elif command == "has-perm":
        name, perm = args
        print(json.dumps(User.objects.get(username=name).has_perm(perm)))
    elif command == "set-password":
        name, password = args
        user = User.objects.get(username=name)
        user.set_password(password)
        user.save()
    elif command == "set-active":
        name, active = args
        User.objects.filter(username=name).update(is_active=active == "true")
    elif command == "expire":
        (key,) = args
        Session.objects.filter(session_key=key).update(expire_date=timezone.now() - timedelta(seconds=1))
    elif command == "corrupt":
        (key,) = args
        Session.objects.filter(session_key=key).update(session_data="garbage:not:signed")
    elif command == "store-date":
        # A value only pickle can hold (the cache engines pickle the session dictionary).
        import datetime
        from importlib import import_module

        (key,) = args
        session = import_module(settings.SESSION_ENGINE).SessionStore(session_key=key)
        session["when"] = datetime.date(2026, 1, 1)
        session.save()
    elif command == "session":
        (key,) = args
        row = Session.objects.filter(session_key=key).first()
        print(json.dumps(row.get_decoded() if row else None))
    elif command == "session-row":
        # The row as stored (for a failing test's message): its expiry as text, and its data.
        from django.db import connection

        (key,) = args
        with connection.cursor() as cursor:
            cursor.execute("SELECT expire_date, session_data FROM django_session WHERE session_key = %s", [key])
            row = cursor.fetchone()
        decoded = Session.objects.filter(session_key=key).first()
        print(json.dumps({
            "row": [str(value) for value in row] if row else None,
            "decoded": decoded.get_decoded() if decoded else None,
            "now": str(timezone.now()),
            "sessions": Session.objects.count(),
        }))
    else:
        raise SystemExit(f"unknown command {command}")


if __name__ == "__main__":
    main(*sys.argv[1:])
