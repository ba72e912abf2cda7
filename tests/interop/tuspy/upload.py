"""tuspy against a tus server: upload some chunks, stop, resume.

    python upload.py ENDPOINT FILE URL_STORAGE_JSON [CHUNK_BYTES]

Uploads FILE to ENDPOINT (e.g. http://127.0.0.1:PORT/tus/) with metadata
`filename`, one `upload_chunk()` (CHUNK_BYTES, 1 MiB by default) at a
time, each PATCH with a SHA-1 `Upload-Checksum` (the checksum extension),
and stops once at least 30 % is acknowledged. A second uploader of the same
file, given the same URL storage (tuspy's FileStorage, a JSON file), finds
the upload there and resumes it. Prints one JSON line:

    {"url": ..., "aborted_at": ..., "resumed_from": ..., "size": ..., "code": ...}

`code` is the `Pickup-Code` header of the last PATCH's answer, or of a HEAD
of the upload URL afterwards (null for a server that sends none). Exits
non-zero, with the reason on stderr, if an upload fails or the resume did
not start past offset 0. tests/tests/tus_interop.rs runs it.
"""

import json
import os
import sys

import requests
from tusclient import client
from tusclient.fingerprint.fingerprint import Fingerprint
from tusclient.storage.filestorage import FileStorage


def uploader(endpoint, path, storage, chunk_size):
    """An uploader that keeps (and looks up) its URL in `storage`."""
    return client.TusClient(endpoint).uploader(
        file_path=path,
        chunk_size=chunk_size,
        metadata={"filename": os.path.basename(path)},
        store_url=True,
        url_storage=storage,
        # Every PATCH carries `Upload-Checksum: sha1 …` (the checksum
        # extension, with tuspy's own digest and encoding).
        upload_checksum=True,
    )


def main():
    if len(sys.argv) < 4:
        sys.exit("usage: python upload.py ENDPOINT FILE URL_STORAGE_JSON [CHUNK_BYTES]")
    endpoint, path, storage_path = sys.argv[1:4]
    chunk_size = int(sys.argv[4]) if len(sys.argv) > 4 else 1024 * 1024
    size = os.path.getsize(path)

    storage = FileStorage(storage_path)
    first = uploader(endpoint, path, storage, chunk_size)
    if first.offset != 0:
        sys.exit(f"the storage already held an upload at offset {first.offset}")
    # Bounded: every chunk moves the offset by at least one byte or raises.
    for _ in range(size // chunk_size + 1):
        if first.offset >= 0.3 * size:
            break
        first.upload_chunk()
    if not 0 < first.offset < size:
        sys.exit(f"the first uploader stopped at {first.offset} of {size}")
    aborted_at = first.offset
    storage.close()

    # A new uploader, as a new run of a program would make it: the URL comes
    # from the storage and the offset from the server's HEAD.
    storage = FileStorage(storage_path)
    second = uploader(endpoint, path, storage, chunk_size)
    resumed_from = second.offset
    if second.url != first.url:
        sys.exit(f"the resume created a new upload: {first.url} then {second.url}")
    if resumed_from <= 0:
        sys.exit(f"the resume started at offset {resumed_from}, not past 0")
    second.upload()
    # Done: the storage forgets it, as tus-js-client's removeFingerprintOnSuccess.
    with open(path, "rb") as stream:
        storage.remove_item(Fingerprint().get_fingerprint(stream))
    storage.close()

    code = second.request.response_headers.get("pickup-code")
    if code is None:
        head = requests.head(second.url, headers={"Tus-Resumable": "1.0.0"}, timeout=60)
        code = head.headers.get("Pickup-Code")
    print(
        json.dumps(
            {
                "url": second.url,
                "aborted_at": aborted_at,
                "resumed_from": resumed_from,
                "size": size,
                "code": code,
            }
        )
    )


if __name__ == "__main__":
    main()
