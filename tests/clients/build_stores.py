#!/usr/bin/env python3
"""Lays out the package stores of the client tests from the fixtures.

    build_stores.py FIXTURES STORES CRATE --composer-proxy URL --cargo-proxy URL

writes, under STORES:
  composer/  a static Composer repository: packages.json (metadata-url, available-packages and a
             Satis-style include/all$<sha1>.json), p2/acme/hello.json, p2/globex/gadget.json and
             their dist zips, whose URLs go through the Composer Tollgate (--composer-proxy)
  cargo/     a static sparse cargo registry: index/config.json WITHOUT "auth-required" (the store
             does not declare it; Tollgate adds it), index/tg/_h/tg_hello and the .crate (CRATE,
             made by `cargo package`), downloaded through the cargo Tollgate (--cargo-proxy)
  pypi/      pypiserver's package directory, holding the wheels of tg-hello, acme-widget and
             globex-gadget 1.0.0
  npm/       the npm registry's directory (empty: the suite publishes into it)
  maven/     the Maven layout, empty (the suite deploys into it)
and, under STORES/../artifacts/, the wheels that twine uploads (tg_upload and acme_upload 1.0.0;
tg_oidc 1.0.0 with a token minted by trusted publishing).
Only the standard library is used; the outputs are deterministic.
"""

import argparse
import base64
import hashlib
import io
import json
import os
import shutil
import zipfile

EPOCH = (2024, 1, 1, 0, 0, 0)


def zip_entries(entries):
    """entries: list of (archive name, bytes) -> zip bytes with fixed timestamps."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries:
            info = zipfile.ZipInfo(name, EPOCH)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
    return buf.getvalue()


def files_under(root):
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for f in sorted(filenames):
            path = os.path.join(dirpath, f)
            with open(path, "rb") as fh:
                out.append((os.path.relpath(path, root).replace(os.sep, "/"), fh.read()))
    return out


def record_hash(data):
    digest = hashlib.sha256(data).digest()
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def make_wheel(out_dir, dist, version, module, source_dir, summary):
    """A pure-Python wheel of `module` (the files of source_dir) named `dist`."""
    norm = dist.replace("-", "_")
    info_dir = f"{norm}-{version}.dist-info"
    entries = [(f"{module}/{name}", data) for name, data in files_under(source_dir)]
    entries.append((f"{info_dir}/METADATA", (
        "Metadata-Version: 2.1\n"
        f"Name: {dist}\n"
        f"Version: {version}\n"
        f"Summary: {summary}\n"
        "License: MIT\n").encode()))
    entries.append((f"{info_dir}/WHEEL", (
        "Wheel-Version: 1.0\n"
        "Generator: tollgate-client-tests\n"
        "Root-Is-Purelib: true\n"
        "Tag: py3-none-any\n").encode()))
    record = "".join(f"{name},{record_hash(data)},{len(data)}\n" for name, data in entries)
    record += f"{info_dir}/RECORD,,\n"
    entries.append((f"{info_dir}/RECORD", record.encode()))
    path = os.path.join(out_dir, f"{norm}-{version}-py3-none-any.whl")
    with open(path, "wb") as fh:
        fh.write(zip_entries(entries))
    return path


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    mode = "wb" if isinstance(data, bytes) else "w"
    with open(path, mode) as fh:
        fh.write(data)


def cargo_index_path(name):
    name = name.lower()
    if len(name) <= 2:
        return f"{len(name)}/{name}"
    if len(name) == 3:
        return f"3/{name[0]}/{name}"
    return f"{name[0:2]}/{name[2:4]}/{name}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("fixtures")
    ap.add_argument("stores")
    ap.add_argument("crate", help="the .crate file of tg_hello 0.1.0")
    ap.add_argument("--composer-proxy", required=True)
    ap.add_argument("--cargo-proxy", required=True)
    args = ap.parse_args()
    fx, st = args.fixtures, args.stores
    for sub in ("composer", "cargo", "pypi", "npm", "maven"):
        os.makedirs(os.path.join(st, sub), exist_ok=True)

    # Composer: packages.json points at /p2/%package%.json; the dists go through the proxy.
    versions = {}
    for name, fixture in (("acme/hello", "acme-hello"), ("globex/gadget", "globex-gadget")):
        dist_zip = zip_entries(files_under(os.path.join(fx, "composer", fixture)))
        dist_rel = f"dist/{name}/{name.replace('/', '-')}-1.0.0.zip"
        write(os.path.join(st, "composer", dist_rel), dist_zip)
        with open(os.path.join(fx, "composer", fixture, "composer.json")) as fh:
            manifest = json.load(fh)
        version = dict(manifest)
        version.update({
            "version": "1.0.0",
            "version_normalized": "1.0.0.0",
            "dist": {
                "type": "zip",
                "url": args.composer_proxy.rstrip("/") + "/" + dist_rel,
                "shasum": hashlib.sha1(dist_zip).hexdigest(),
            },
        })
        versions[name] = version
        write(os.path.join(st, "composer", "p2", name + ".json"),
              json.dumps({"packages": {name: [version]}}, indent=2) + "\n")
    # A Satis-style include file listing every package (Composer 1 form: version-keyed).
    include = json.dumps({"packages": {n: {"1.0.0": v} for n, v in versions.items()}}, indent=2) + "\n"
    include_rel = "include/all$" + hashlib.sha1(include.encode()).hexdigest() + ".json"
    write(os.path.join(st, "composer", include_rel), include)
    write(os.path.join(st, "composer", "packages.json"), json.dumps({
        "packages": [],
        "metadata-url": "/p2/%package%.json",
        "available-packages": sorted(versions),
        "includes": {include_rel: {"sha1": hashlib.sha1(include.encode()).hexdigest()}},
    }, indent=2) + "\n")

    # cargo: a sparse index whose config.json does NOT say auth-required.
    with open(args.crate, "rb") as fh:
        crate = fh.read()
    write(os.path.join(st, "cargo", "crates", "tg_hello", "tg_hello-0.1.0.crate"), crate)
    write(os.path.join(st, "cargo", "index", "config.json"), json.dumps({
        "dl": args.cargo_proxy.rstrip("/") + "/crates/{crate}/{crate}-{version}.crate",
    }) + "\n")
    line = {"name": "tg_hello", "vers": "0.1.0", "deps": [], "features": {},
            "cksum": hashlib.sha256(crate).hexdigest(), "yanked": False}
    write(os.path.join(st, "cargo", "index", cargo_index_path("tg_hello")),
          json.dumps(line, separators=(",", ":")) + "\n")

    # PyPI: tg-hello in the store for pip; tg-upload beside it for twine.
    pkg = os.path.join(fx, "python", "tg_hello")
    make_wheel(os.path.join(st, "pypi"), "tg-hello", "1.0.0", "tg_hello", pkg,
               "Fixture package of the Tollgate client tests")
    # Two more for package scopes: one inside acme-*, one outside.
    make_wheel(os.path.join(st, "pypi"), "acme-widget", "1.0.0", "acme_widget", pkg,
               "Fixture package inside the acme-* scope")
    make_wheel(os.path.join(st, "pypi"), "globex-gadget", "1.0.0", "globex_gadget", pkg,
               "Fixture package outside the acme-* scope")
    artifacts = os.path.join(os.path.dirname(os.path.abspath(st)), "artifacts")
    if os.path.isdir(artifacts):
        shutil.rmtree(artifacts)
    os.makedirs(artifacts)
    make_wheel(artifacts, "tg-upload", "1.0.0", "tg_upload", pkg,
               "Fixture package the Tollgate client tests upload with twine")
    make_wheel(artifacts, "tg-oidc", "1.0.0", "tg_oidc", pkg,
               "Fixture package the Tollgate client tests publish with a minted token")
    make_wheel(artifacts, "acme-upload", "1.0.0", "acme_upload", pkg,
               "Fixture package a token scoped to acme-* uploads with twine")


if __name__ == "__main__":
    main()
