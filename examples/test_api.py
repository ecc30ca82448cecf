#!/usr/bin/env python3
"""Checks a running `kiln serve` the way seed 002's test_api.py does: the health endpoint, then one
generation through POST /generate, saved as generated_image.png. Standard library only.

    python3 test_api.py                      # http://localhost:7860, 20 steps, 512x512
    python3 test_api.py --url http://host:8080 --steps 10 --size 256 --out robot.png

Environment: KILN_URL (default for --url), KILN_API_KEY (sent as X-API-Key when the server has keys).
Exits 0 when both checks pass, 1 otherwise.
"""
import argparse
import base64
import json
import os
import sys
import time
import urllib.error
import urllib.request


def call(url, api_key, body=None, timeout=600):
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["X-API-Key"] = api_key
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers=headers, method="POST" if data else "GET")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read().decode() or "null")
    except urllib.error.HTTPError as e:
        text = e.read().decode(errors="replace")
        try:
            return e.code, json.loads(text)
        except ValueError:
            return e.code, text


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", default=os.environ.get("KILN_URL", "http://localhost:7860"))
    p.add_argument("--prompt", default="a beautiful sunset over mountains")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--out", default="generated_image.png")
    args = p.parse_args()
    base = args.url.rstrip("/")
    key = os.environ.get("KILN_API_KEY")

    print(f"Testing health endpoint at {base}/health ...")
    try:
        status, health = call(f"{base}/health", key, timeout=30)
    except (urllib.error.URLError, OSError) as e:
        print(f"FAIL: cannot reach {base}: {e}")
        return 1
    if status != 200:
        print(f"FAIL: health answered HTTP {status}: {health}")
        return 1
    print(f"OK: {health}")

    body = {"prompt": args.prompt, "steps": args.steps, "width": args.size, "height": args.size}
    if args.seed is not None:
        body["seed"] = args.seed
    print(f"Generating {body} ...")
    started = time.time()
    status, result = call(f"{base}/generate", key, body)
    if status != 200 or not isinstance(result, dict) or not result.get("success"):
        print(f"FAIL: generate answered HTTP {status}: {str(result)[:2000]}")
        return 1
    image = result["image"]
    prefix = "data:image/png;base64,"
    if not image.startswith(prefix):
        print(f"FAIL: the image is not a PNG data URL: {image[:60]}")
        return 1
    with open(args.out, "wb") as f:
        f.write(base64.b64decode(image[len(prefix):]))
    print(f"OK: saved {args.out} ({result['dimensions']}, seed {result['seed']}) in {time.time() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
