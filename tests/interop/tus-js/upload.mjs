// tus-js-client against a tus server: upload, interrupt, resume.
//
//   node upload.mjs ENDPOINT FILE URL_STORAGE_JSON [CHUNK_BYTES]
//
// Uploads FILE to ENDPOINT (e.g. http://127.0.0.1:PORT/tus/) with metadata
// `filename`, in CHUNK_BYTES PATCH requests (1 MiB by default), and aborts
// once at least 30 % is acknowledged. A second Upload of the same file then
// finds the first in the URL storage (a JSON file, as a Node program would
// keep it across runs) and resumes it. Prints one JSON line:
//
//   {"url":..., "aborted_at":..., "resumed_from":..., "size":..., "code":...}
//
// `code` is the `Pickup-Code` header of the server's last answer (null for a
// server that sends none). Exits non-zero, with the reason on stderr, if
// the upload fails or the resume did not start past offset 0.
// tests/tests/tus_interop.rs runs it.

import { createReadStream, statSync } from 'node:fs'
import { basename } from 'node:path'
import { Upload, FileUrlStorage } from 'tus-js-client'

const [endpoint, file, storagePath, chunkArg] = process.argv.slice(2)
if (!endpoint || !file || !storagePath) {
  console.error('usage: node upload.mjs ENDPOINT FILE URL_STORAGE_JSON [CHUNK_BYTES]')
  process.exit(2)
}
const chunkSize = Number(chunkArg ?? 1024 * 1024)

// One line per failure: tus-js-client's errors carry the whole request and
// response objects, which would bury the status and body in pages of dump.
function fail(err) {
  console.error(`upload.mjs: ${err?.message ?? err}`)
  process.exit(1)
}
const size = statSync(file).size
const urlStorage = new FileUrlStorage(storagePath)

// The headers of every answer, as tus-js-client hands them over.
let code = null
let headOffset = null
function onAfterResponse(req, res) {
  const c = res.getHeader('Pickup-Code')
  if (c) code = c
  if (req.getMethod() === 'HEAD') {
    headOffset = Number.parseInt(res.getHeader('Upload-Offset'), 10)
  }
}

function options(extra) {
  return {
    endpoint,
    chunkSize,
    metadata: { filename: basename(file) },
    urlStorage,
    storeFingerprintForResuming: true,
    // A failure must show here at once, not after the default retries.
    retryDelays: null,
    onAfterResponse,
    ...extra,
  }
}

// First pass: stop once 30 % is acknowledged (by the server's Upload-Offset).
const first = await new Promise((resolve, reject) => {
  const upload = new Upload(
    createReadStream(file),
    options({
      onChunkComplete(_chunk, accepted, total) {
        if (accepted >= 0.3 * total && accepted < total) {
          upload.abort().then(() => resolve({ url: upload.url, accepted }), reject)
        }
      },
      onSuccess() {
        reject(new Error('the first upload finished before it could be interrupted'))
      },
      onError: reject,
    }),
  )
  upload.start()
}).catch(fail)

// Second pass: a new Upload of the same file, resumed from the storage.
const second = await new Promise((resolve, reject) => {
  const upload = new Upload(
    createReadStream(file),
    options({
      removeFingerprintOnSuccess: true,
      onSuccess() {
        resolve({ url: upload.url })
      },
      onError: reject,
    }),
  )
  upload
    .findPreviousUploads()
    .then((previous) => {
      if (previous.length !== 1) {
        throw new Error(`expected one previous upload in the storage, found ${previous.length}`)
      }
      upload.resumeFromPreviousUpload(previous[0])
      upload.start()
    })
    .catch(reject)
}).catch(fail)

if (second.url !== first.url) {
  fail(`the resume created a new upload: ${first.url} then ${second.url}`)
}
if (!(headOffset > 0)) {
  fail(`the resume started at offset ${headOffset}, not past 0`)
}
console.log(
  JSON.stringify({
    url: second.url,
    aborted_at: first.accepted,
    resumed_from: headOffset,
    size,
    code,
  }),
)
