// One tus upload with tus-js-client's defaults (chunkSize unlimited: one
// PATCH with the whole file after the creation), timed.
//
//   node upload.mjs ENDPOINT FILE
//
// Prints one JSON line once the server acknowledged the last byte:
// `{"secs":..., "bytes":..., "url":..., "code":...}`, where `secs` runs from
// `start()` (the creation included) to `onSuccess`, and `code` is
// Pickup's `Pickup-Code` header (null for another server).
// pickup-bench (bench/src/tus.rs) runs it.

import { createReadStream, statSync } from 'node:fs'
import { basename } from 'node:path'
import { Upload } from 'tus-js-client'

const [endpoint, file] = process.argv.slice(2)
if (!endpoint || !file) {
  console.error('usage: node upload.mjs ENDPOINT FILE')
  process.exit(2)
}

let code = null
const started = process.hrtime.bigint()
const url = await new Promise((resolve, reject) => {
  const upload = new Upload(createReadStream(file), {
    endpoint,
    metadata: { filename: basename(file) },
    storeFingerprintForResuming: false,
    retryDelays: null,
    onAfterResponse(_req, res) {
      code = res.getHeader('Pickup-Code') || code
    },
    onSuccess() {
      resolve(upload.url)
    },
    onError: reject,
  })
  upload.start()
}).catch((err) => {
  // One line: tus-js-client's errors carry whole request objects.
  console.error(`upload.mjs: ${err?.message ?? err}`)
  process.exit(1)
})
const secs = Number(process.hrtime.bigint() - started) / 1e9
console.log(JSON.stringify({ secs, bytes: statSync(file).size, url, code }))
