#!/usr/bin/env python3
"""S3 helper for the integration tests (boto3), against the bucket of $TESSERA_TEST_S3_URL.

Credentials come from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (never from the command line).

s3util.py list PREFIX [--meta]      one line per object under PREFIX/: "KEY SIZE [LABEL]" (LABEL: the
                                    x-amz-meta-tessera-label of the object, "-" when it has none)
s3util.py count PREFIX              number of objects under PREFIX/
s3util.py flip KEY OFFSET           GET the object, flip the bits of byte OFFSET (negative: from the end),
                                    PUT it back with the same metadata; prints "OLD NEW" bytes
s3util.py delete PREFIX             delete every object under PREFIX/ (prints how many)
s3util.py check                     the endpoint answers and the bucket exists (exit 0), else a message
"""
import os
import sys
from urllib.parse import urlparse

sys.dont_write_bytecode = True


def client_and_bucket():
    url = os.environ.get("TESSERA_TEST_S3_URL")
    if not url:
        sys.exit("s3util: TESSERA_TEST_S3_URL is not set")
    import boto3
    from botocore.config import Config
    u = urlparse(url)
    parts = u.path.strip("/").split("/", 1)
    bucket = parts[0]
    base = parts[1] if len(parts) > 1 else ""
    c = boto3.client(
        "s3",
        endpoint_url=f"{u.scheme}://{u.netloc}",
        region_name=os.environ.get("AWS_REGION", "us-east-1"),
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3},
                      connect_timeout=5, read_timeout=30),
    )
    return c, bucket, base


def full(base, prefix):
    p = prefix.strip("/")
    return (base + "/" + p if base and p else base or p) + "/"


def keys(c, bucket, prefix):
    out = []
    tok = None
    while True:
        kw = dict(Bucket=bucket, Prefix=prefix)
        if tok:
            kw["ContinuationToken"] = tok
        r = c.list_objects_v2(**kw)
        out += [(o["Key"], o["Size"]) for o in r.get("Contents", [])]
        if not r.get("IsTruncated"):
            return out
        tok = r["NextContinuationToken"]


def main():
    a = sys.argv[1:]
    if not a:
        sys.exit(__doc__)
    c, bucket, base = client_and_bucket()
    cmd = a[0]
    if cmd == "check":
        c.head_bucket(Bucket=bucket)
        return 0
    if cmd in ("list", "count"):
        ks = keys(c, bucket, full(base, a[1]))
        if cmd == "count":
            print(len(ks))
            return 0
        meta = "--meta" in a
        for k, s in ks:
            if meta:
                h = c.head_object(Bucket=bucket, Key=k)
                print(k, s, h.get("Metadata", {}).get("tessera-label", "-"))
            else:
                print(k, s)
        return 0
    if cmd == "flip":
        key, off = a[1], int(a[2])
        r = c.get_object(Bucket=bucket, Key=key)
        body = bytearray(r["Body"].read())
        meta = r.get("Metadata", {})
        old = body[off]
        body[off] ^= 0xFF
        kw = dict(Bucket=bucket, Key=key, Body=bytes(body), Metadata=meta)
        if r.get("ContentType"):
            kw["ContentType"] = r["ContentType"]
        c.put_object(**kw)
        print(old, body[off])
        return 0
    if cmd == "delete":
        ks = [k for k, _ in keys(c, bucket, full(base, a[1]))]
        for i in range(0, len(ks), 1000):
            c.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in ks[i:i + 1000]], "Quiet": True})
        print(len(ks))
        return 0
    sys.exit(f"s3util: unknown command {cmd}")


if __name__ == "__main__":
    sys.exit(main())
