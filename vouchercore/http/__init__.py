"""A Voucherify-compatible HTTP server over an :class:`~vouchercore.Engine`.

Voucherify's own SDKs (PyPI ``voucherify``, npm ``@voucherify/sdk``) run unchanged against it::

    from vouchercore import Engine
    from vouchercore.http import create_app

    app = create_app(Engine("sqlite:///vouchers.db"), app_id="my-app", app_token="secret")
    # uvicorn module:app, or mount it inside any ASGI application

or ``uvicorn --factory vouchercore.http:from_environment --workers 4`` (configured by
``VOUCHERCORE_*`` variables: :func:`from_environment`), or from the command line::

    vouchercore serve --store sqlite:///vouchers.db --app-id my-app --app-token secret

Needs the ``http`` extra (``pip install 'vouchercore[http]'``: Starlette, uvicorn,
python-multipart).

The package is laid out by concern:

- :mod:`vouchercore.http.app` — :func:`create_app`: routes, authentication, limits, errors,
  and how the engine is called (straight on the in-memory store, in bounded worker threads on
  SQL stores);
- :mod:`vouchercore.http.bodies` — request JSON and query strings → engine arguments;
- :mod:`vouchercore.http.shapes` — engine objects → Voucherify's JSON;
- :mod:`vouchercore.http.jobs` — exports and async actions (CSV import): records, files, and
  the worker threads that finish them.

No voucher rule lives here: every endpoint calls the engine's verbs, which decide.
"""

from vouchercore.http.app import (
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_UPLOAD_BYTES,
    DEFAULT_THREADS,
    create_app,
    from_environment,
)

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_MAX_UPLOAD_BYTES",
    "DEFAULT_THREADS",
    "create_app",
    "from_environment",
]
