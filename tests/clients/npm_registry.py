#!/usr/bin/env python3
"""A small npm registry for the client tests: no auth of its own, files on disk.

    npm_registry.py --port P --dir DIR --log FILE

It answers what `npm publish` and `npm install` use:
  GET  /NAME                    the packument (DIR/packuments/NAME.json), 404 if unknown
  GET  /NAME/-/FILE.tgz         a tarball (DIR/tarballs/FILE.tgz; scoped: /@S/N/-/@S/N-V.tgz)
  GET  /-/v1/search?text=T      packages whose name holds one of the words of T (npm search)
  PUT  /NAME                    a publish: the versions and dist-tags are merged into the packument,
                                each `_attachments` entry is written to DIR/tarballs/; 409 when a
                                version exists already
Scoped names arrive as /@scope%2fname (or /@scope/name) and are stored as @scope%2fname.
Every request is appended to FILE as `METHOD PATH STATUS auth=yes|no`, so the suite can tell
whether a request reached the store, and whether a credential was forwarded to it.
"""

import argparse
import base64
import json
import os
import re
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.Lock()


def split(path):
    """'/NAME' or '/NAME/-/FILE' -> (name, file or None); None when the path is no such thing."""
    path = urllib.parse.urlsplit(path).path
    m = re.fullmatch(r"/((?:@[^/%]+(?:%2[fF]|/))?[^/@%][^/]*)(?:/-/((?:@[^/]+/)?[^/]+\.tgz))?/?", path)
    if not m:
        return None
    name = urllib.parse.unquote(m.group(1))
    if name.count("/") > 1 or name.startswith(".") or ".." in name:
        return None
    return name, m.group(2)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "tollgate-test-npm-registry"

    def log_message(self, fmt, *args):  # the access log below replaces stderr logging
        pass

    def record(self, status):
        auth = "yes" if self.headers.get("Authorization") else "no"
        with LOCK, open(self.server.log, "a") as fh:
            fh.write(f"{self.command} {self.path} {status} auth={auth}\n")

    def reply(self, status, body, ctype="application/json"):
        if isinstance(body, (dict, list)):
            body = (json.dumps(body) + "\n").encode()
        self.record(status)
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def packument_path(self, name):
        return os.path.join(self.server.dir, "packuments", name.replace("/", "%2f") + ".json")

    def search(self):
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
        words = " ".join(query.get("text", [""])).split()
        objects = []
        folder = os.path.join(self.server.dir, "packuments")
        for fname in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
            with open(os.path.join(folder, fname)) as fh:
                doc = json.load(fh)
            name = doc.get("name", "")
            if words and not any(w in name for w in words):
                continue
            latest = doc.get("dist-tags", {}).get("latest", "")
            objects.append({
                "package": {"name": name, "version": latest,
                            "description": doc.get("description", ""),
                            "date": "2024-01-01T00:00:00.000Z", "links": {}, "keywords": [],
                            "publisher": {"username": "tollgate"}, "maintainers": []},
                "score": {"final": 1, "detail": {"quality": 1, "popularity": 1, "maintenance": 1}},
                "searchScore": 1,
            })
        self.reply(200, {"objects": objects, "total": len(objects), "time": "2024-01-01T00:00:00.000Z"})

    def do_GET(self):
        if urllib.parse.urlsplit(self.path).path == "/-/v1/search":
            return self.search()
        parsed = split(self.path)
        if parsed is None:
            return self.reply(404, {"error": "not_found"})
        name, tarball = parsed
        path = (os.path.join(self.server.dir, "tarballs", os.path.basename(tarball)) if tarball
                else self.packument_path(name))
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except FileNotFoundError:
            return self.reply(404, {"error": "not_found"})
        self.reply(200, data, "application/octet-stream" if tarball else "application/json")

    do_HEAD = do_GET

    def do_PUT(self):
        parsed = split(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        if parsed is None or parsed[1] is not None:
            return self.reply(405, {"error": "method_not_allowed"})
        name = parsed[0]
        try:
            doc = json.loads(body)
        except ValueError:
            return self.reply(400, {"error": "bad_json"})
        with LOCK:
            path = self.packument_path(name)
            try:
                with open(path) as fh:
                    current = json.load(fh)
            except FileNotFoundError:
                current = {"_id": name, "name": name, "versions": {}, "dist-tags": {}}
            for version in doc.get("versions", {}):
                if version in current["versions"]:
                    conflict = True
                    break
            else:
                conflict = False
            if not conflict:
                os.makedirs(os.path.join(self.server.dir, "tarballs"), exist_ok=True)
                for fname, att in (doc.get("_attachments") or {}).items():
                    data = base64.b64decode(att["data"])
                    with open(os.path.join(self.server.dir, "tarballs", os.path.basename(fname)), "wb") as fh:
                        fh.write(data)
                current["versions"].update(doc.get("versions", {}))
                current["dist-tags"].update(doc.get("dist-tags", {}))
                for key in ("description", "readme"):
                    if key in doc:
                        current[key] = doc[key]
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, "w") as fh:
                    json.dump(current, fh, indent=2)
        if conflict:
            return self.reply(409, {"error": "conflict", "reason": "version exists"})
        self.reply(201, {"ok": True, "id": name})

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.reply(404, {"error": "not_found"})

    do_DELETE = do_POST


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--dir", required=True)
    ap.add_argument("--log", required=True)
    args = ap.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.dir = args.dir
    server.log = args.log
    open(args.log, "a").close()
    server.serve_forever()


if __name__ == "__main__":
    main()
