#!/usr/bin/python3
"""A small PyTorch inference service that explains each prediction with
attnroll as a sidecar: while the model answers, every layer's attention is
streamed to attnroll-server, and the saliency map comes back with the
prediction.

    PYTHONPATH=build/python /usr/bin/python3 examples/model_server.py \\
        --attnroll 127.0.0.1:50051 [--port 8080] [--weights vit_b_16.pth]

    curl --data-binary @cat.jpg http://127.0.0.1:8080/predict
    -> {"class": 281, "score": 0.93, "saliency": [[...14 x 14...]], ...}

POST /predict takes a PNG or JPEG body and answers JSON: the class, its
softmax score, the 14 x 14 saliency map (attention rollout of the CLS token),
heads_fused_by_client, and with ?overlay=1 the overlay as base64 PNG.
GET /healthz answers "ok". A bad picture is a 400, a refusal by attnroll a
502 naming its gRPC code and message. Listens on 127.0.0.1 only; its first
stdout line is "model-server listening http=127.0.0.1:PORT". Requests run
one at a time (one model, its attention modules patched per request).
"""

import argparse
import base64
import io
import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import torch
from PIL import Image, UnidentifiedImageError

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import vit_saliency  # noqa: E402  (the model, preprocessing and streamed explain)

import attnroll  # noqa: E402
from attnroll import render  # noqa: E402

MAX_BODY = 16 << 20


def make_handler(model, client, lock):
    class Handler(BaseHTTPRequestHandler):
        def _send(self, status, body, ctype="application/json"):
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, fmt, *args):
            sys.stderr.write("model-server: " + (fmt % args) + "\n")

        def do_GET(self):
            if urlparse(self.path).path == "/healthz":
                return self._send(200, b"ok\n", "text/plain")
            self._send(404, {"error": "not found"})

        def do_POST(self):
            url = urlparse(self.path)
            if url.path != "/predict":
                return self._send(404, {"error": "not found"})
            length = int(self.headers.get("Content-Length") or 0)
            if not 0 < length <= MAX_BODY:
                return self._send(400, {"error": "body: expected a PNG or JPEG of 1 .. %d bytes, "
                                                 "got %d" % (MAX_BODY, length)})
            try:
                img = Image.open(io.BytesIO(self.rfile.read(length)))
                img.load()
            except (UnidentifiedImageError, OSError) as e:
                return self._send(400, {"error": "body: expected a PNG or JPEG picture: %s" % e})
            img, x = vit_saliency.preprocess(img)
            try:
                with lock:
                    logits, result = vit_saliency.explain(model, x, client)
            except attnroll.AttnrollError as e:
                return self._send(502, {"error": "attnroll", "code": e.code.name,
                                        "message": e.message})
            probs = torch.softmax(logits[0], dim=0)
            cls = int(probs.argmax())
            out = {"class": cls, "score": float(probs[cls]), "grid": [14, 14],
                   "saliency": result.map.tolist(),
                   "heads_fused_by_client": result.heads_fused_by_client,
                   "attnroll_compute_seconds": result.compute_seconds}
            if parse_qs(url.query).get("overlay") == ["1"]:
                buf = io.BytesIO()
                render.overlay(result.map, img, alpha=0.6).save(buf, "PNG")
                out["overlay_png_base64"] = base64.b64encode(buf.getvalue()).decode()
            self._send(200, out)

    return Handler


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--attnroll", required=True, help="attnroll-server address, host:port")
    ap.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free one)")
    ap.add_argument("--weights", help="a state dict of torchvision's vit_b_16")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    model = vit_saliency.build_model(args.weights, args.seed)
    client = attnroll.Client(args.attnroll, timeout=60)
    httpd = ThreadingHTTPServer(("127.0.0.1", args.port), make_handler(model, client,
                                                                     threading.Lock()))
    print("model-server listening http=127.0.0.1:%d" % httpd.server_address[1], flush=True)
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        httpd.server_close()
        client.close()


if __name__ == "__main__":
    main()
