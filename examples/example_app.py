"""Two tiny ASGI apps for examples/services.json (`corral up -c examples/services.json`)."""


async def _health(scope, receive, send):  # type: ignore[no-untyped-def]
    if scope["type"] != "http":
        return
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]}
    )
    await send({"type": "http.response.body", "body": b'{"ok": true}'})


app = _health
worker = _health
