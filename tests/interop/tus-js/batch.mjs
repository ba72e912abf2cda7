// tus-js-client and Pickup's batches: several files under one code.
//
//   node batch.mjs BASE FILE...
//
// Opens a batch (`POST BASE/tus/batches`), uploads every FILE with
// tus-js-client to `BASE/tus/` with metadata `filename` and `batch` (the
// handle), one after another (a batch takes one PATCH at a time, see
// docs/tus.md), then closes the batch (`POST
// BASE/tus/batches/{handle}/close`) and prints one JSON line:
//
//   {"batch":..., "code":..., "files":N, "urls":[...]}
//
// Exits non-zero, with the reason on stderr, on any refusal. The scheme is
// docs/tus.md's "Several files, one code"; tests/tests/tus_interop.rs runs it.

import { createReadStream } from 'node:fs'
import { basename } from 'node:path'
import { Upload } from 'tus-js-client'

const [base, ...files] = process.argv.slice(2)
if (!base || files.length === 0) {
  console.error('usage: node batch.mjs BASE FILE...')
  process.exit(2)
}

function fail(err) {
  console.error(`batch.mjs: ${err?.message ?? err}`)
  process.exit(1)
}

const tus = { 'Tus-Resumable': '1.0.0' }

async function post(path) {
  const res = await fetch(`${base}${path}`, { method: 'POST', headers: tus })
  const text = await res.text()
  if (!res.ok) throw new Error(`POST ${path}: ${res.status} ${text}`)
  return { res, body: JSON.parse(text) }
}

function upload(file, handle) {
  return new Promise((resolve, reject) => {
    const u = new Upload(createReadStream(file), {
      endpoint: `${base}/tus/`,
      chunkSize: 1024 * 1024,
      metadata: { filename: basename(file), batch: handle },
      retryDelays: null,
      onSuccess() {
        resolve(u.url)
      },
      onError: reject,
    })
    u.start()
  })
}

try {
  const opened = await post('/tus/batches')
  const handle = opened.body.batch
  if (opened.res.headers.get('pickup-batch') !== handle) {
    throw new Error(`Pickup-Batch header ${opened.res.headers.get('pickup-batch')} is not ${handle}`)
  }
  const urls = []
  for (const f of files) urls.push(await upload(f, handle))
  const closed = await post(`/tus/batches/${handle}/close`)
  if (closed.res.headers.get('pickup-code') !== closed.body.code) {
    throw new Error(`Pickup-Code header and body differ: ${JSON.stringify(closed.body)}`)
  }
  console.log(JSON.stringify({ batch: handle, code: closed.body.code, files: closed.body.files, urls }))
} catch (e) {
  fail(e)
}
