"""An OpenAI-compatible chat server for tests: replies from a script, records what it got.

Stdlib only (http.server in a thread), bound to 127.0.0.1 on a free port, so the real
`openai` client is exercised over real HTTP. Each POST to /v1/chat/completions consumes
the next `Reply` of the script; a request past the end of the script gets a 500 saying so
(or, with `repeat_last`, the last reply again; with `responder`, whatever it answers to
the prompt). Replies behave like real models': a finish
reason (`length` when cut at max_tokens), null content, `<think>` drafts, the answer in a
reasoning field; `api_key` makes the server answer 401 to any other bearer token, like a
hosted endpoint; any other path is a 404, like a base_url without `/v1`.
`closed_port_url()` gives a base URL where nothing listens (connection refused).

Example:
    with FakeLLMServer([Reply(status=429), Reply(content="hello")]) as srv:
        client = openai.OpenAI(base_url=srv.base_url, api_key="x", max_retries=0)
        ...
        srv.requests  # [{"path", "headers", "body"}, ...]
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    """One scripted answer: HTTP status, delay before answering, content or a raw body."""

    content: str | None = ""  # None: a null content field
    status: int = 200
    delay_s: float = 0.0
    usage: tuple[int, int] | None = (100, 50)  # (prompt_tokens, completion_tokens); None: omit
    body: str | None = None  # raw response body, overrides content/usage
    headers: dict[str, str] = field(default_factory=dict)
    finish_reason: str = "stop"
    reasoning: str | None = None  # put into the message's `reasoning_key` field
    reasoning_key: str = "reasoning_content"


def closed_port_url() -> str:
    """A loopback base URL where nothing listens: connections are refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def _user_text(body: Any) -> str:
    msgs = body.get("messages", []) if isinstance(body, dict) else []
    return "\n".join(m.get("content") or "" for m in msgs if m.get("role") == "user")


class FakeLLMServer:
    """A scripted /v1/chat/completions endpoint on the loopback interface."""

    def __init__(self, script: list[Reply], api_key: str | None = None,
                 repeat_last: bool = False, max_requests: int = 500,
                 responder: Callable[[str, int], Reply] | None = None):
        self.script = list(script)
        self.responder = responder  # (user prompt, request index) -> Reply, after the script
        self.api_key, self.repeat_last, self.max_requests = api_key, repeat_last, max_requests
        self._last: Reply | None = None
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length).decode("utf-8")
                try:
                    body = json.loads(raw)
                except json.JSONDecodeError:
                    body = raw
                with server._lock:
                    server.requests.append({"path": self.path, "headers": dict(self.headers),
                                            "body": body})
                    bounded = len(server.requests) <= server.max_requests
                    auth = self.headers.get("Authorization", "")
                    authorized = server.api_key is None or auth == f"Bearer {server.api_key}"
                    routed = self.path.rstrip("/") == "/v1/chat/completions"
                    reply = None
                    if bounded and authorized and routed:
                        reply = server.script.pop(0) if server.script else (
                            server._last if server.repeat_last else None)
                        if reply is None and server.responder is not None:
                            try:
                                reply = server.responder(_user_text(body),
                                                         len(server.requests) - 1)
                            except Exception as e:  # noqa: BLE001 - a test's bug: a reply
                                reply = Reply(status=500, body=json.dumps({"error": {
                                    "message": f"fake server responder: {e!r}"}}))
                        server._last = reply or server._last
                if not routed:
                    return self._send(404, json.dumps({"error": {"message": "not found"}}), {})
                if not authorized:
                    return self._send(401, json.dumps({"error": {
                        "message": "Incorrect API key provided", "type": "invalid_request_error",
                        "code": "invalid_api_key"}}), {})
                if not bounded:
                    return self._send(500, json.dumps(
                        {"error": {"message": "fake server: request limit reached"}}), {})
                if reply is None:
                    return self._send(500, json.dumps(
                        {"error": {"message": "fake server: script exhausted"}}), {})
                if reply.delay_s and server._stop.wait(reply.delay_s):
                    return
                self._send(reply.status, server._body(reply, body), reply.headers)

            def _send(self, status: int, text: str, headers: dict[str, str]) -> None:
                data = text.encode("utf-8")
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client timed out and left

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.02,),
                                        daemon=True)

    @property
    def base_url(self) -> str:
        """The endpoint's base URL, as `openai.OpenAI(base_url=...)` wants it."""
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def _body(self, reply: Reply, request: Any) -> str:
        if reply.body is not None:
            return reply.body
        if reply.status != 200:
            return json.dumps({"error": {"message": f"scripted status {reply.status}",
                                         "type": "scripted", "code": reply.status}})
        model = request.get("model", "fake") if isinstance(request, dict) else "fake"
        out: dict[str, Any] = {
            "id": f"chatcmpl-fake-{len(self.requests)}", "object": "chat.completion",
            "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "finish_reason": reply.finish_reason,
                         "message": {"role": "assistant", "content": reply.content}}],
        }
        if reply.reasoning is not None:
            out["choices"][0]["message"][reply.reasoning_key] = reply.reasoning
        if reply.usage is not None:
            out["usage"] = {"prompt_tokens": reply.usage[0], "completion_tokens": reply.usage[1],
                            "total_tokens": sum(reply.usage)}
        return json.dumps(out)

    def prompts(self) -> list[str]:
        """The user-message text of every request received, in order."""
        return [_user_text(r["body"]) for r in self.requests]

    def start(self) -> FakeLLMServer:
        """Start serving in a daemon thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; delayed replies in flight are abandoned."""
        self._stop.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> FakeLLMServer:  # noqa: PYI034 - py3.10 has no typing.Self
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
