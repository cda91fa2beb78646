"""The baseline: a bare Starlette endpoint that reads the body and answers 200 with JSON.

It does what any webhook endpoint must do at the least (read the request, answer), so
the gateway's extra cost (verify, dedupe, store in Redis, log) shows as the ratio.
/v1/t is the same for analytics.js's single messages (bench/collect.py): read the body,
answer Segment's `{"success": true}`.
"""

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


async def webhook(request: Request) -> JSONResponse:
    body = await request.body()
    return JSONResponse({"status": "accepted", "bytes": len(body)})


async def collect(request: Request) -> JSONResponse:
    await request.body()
    return JSONResponse({"success": True})


app = Starlette(
    routes=[
        Route("/webhooks/{source}", webhook, methods=["POST"]),
        Route("/v1/t", collect, methods=["POST"]),
    ]
)
