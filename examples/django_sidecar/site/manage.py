#!/usr/bin/env python
"""The Django half of examples/django_sidecar: its own logins, sessions and admin."""
import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sidecar_site.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
