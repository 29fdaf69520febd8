# A real moto S3 server, optionally pre-filled in-process with many small objects.
#
# Uploading 100,000 objects over HTTP takes moto about eight minutes; inserting them into its
# in-memory backend directly takes seconds. The server is started only after seeding, so the
# port opening means the data is there.
#
# usage: python3 moto_seeded.py PORT [BUCKET PREFIX COUNT]
import sys

from moto.core import DEFAULT_ACCOUNT_ID
from moto.s3.models import s3_backends
from moto.server import ThreadedMotoServer

port = int(sys.argv[1])
if len(sys.argv) == 5:
    bucket, prefix, count = sys.argv[2], sys.argv[3], int(sys.argv[4])
    backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
    backend.create_bucket(bucket, "us-east-1")
    for i in range(count):
        backend.put_object(bucket, f"{prefix}obj-{i:06d}", b"x")
server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
server.start()
print("ready", flush=True)
import threading  # noqa: E402

threading.Event().wait()
