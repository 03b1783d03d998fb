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


def _set_storage_options(ctx, param, value):
    if value is not None:
        from yume_core import remote

        try:
            remote.set_storage_options(value)
        except ValueError as e:
            raise click.BadParameter(str(e)) from None
    return value


def storage_options(f):
    """`--storage-options JSON`: fsspec arguments for every URL of the command (and of the workers it starts)."""
    return click.option("--storage-options", callback=_set_storage_options, expose_value=False, is_eager=True,
                        metavar="JSON",
                        help="Object storage: fsspec arguments as JSON, e.g. '{\"endpoint_url\": "
                             "\"https://s3.example.com\", \"key\": \"...\", \"secret\": \"...\"}'. Default: the "
                             "standard environment (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...). Paths and folders "
                             "may then be s3:// (or gs://) URLs.")(f)
