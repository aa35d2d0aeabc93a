"""``dicomslide serve``: an asyncio tile service and viewer for slides in a folder or on DICOMweb.

Install with ``pip install 'dicomslide[serve]'`` (Starlette and Uvicorn); ``import dicomslide``
does not import this package. :func:`create_app` gives the ASGI application, to run with any
ASGI server or to mount in a FastAPI or Starlette service::

    from starlette.routing import Mount
    app.routes.append(Mount("/wsi", create_app(dicomslide.DICOMwebClient(url))))
"""

from __future__ import annotations

from dicomslide.serve.app import ServeSettings, create_app

__all__ = ["ServeSettings", "create_app"]
