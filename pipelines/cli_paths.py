"""A command-line path that may also be an object-storage URL (`s3://bucket/...`), checked where it lives."""

from __future__ import annotations

import click


class PathOrURL(click.ParamType):
    """click.Path's checks for a local path; for a URL, that the object (or folder) exists in its store."""

    name = "path|url"

    def __init__(self, exists: bool = False, **path_kwargs):
        self.exists = exists
        self.local = click.Path(exists=exists, **path_kwargs)

    def convert(self, value, param, ctx):
        from yume_core import remote

        if not remote.is_url(str(value)):
            return self.local.convert(value, param, ctx)
        if self.exists and not remote.exists(str(value)):
            self.fail(f"{value!r} does not exist (or the storage settings cannot reach it: AWS_ENDPOINT_URL, "
                      "credentials, --storage-options)", param, ctx)
        return str(value)
