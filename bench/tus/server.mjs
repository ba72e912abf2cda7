// The reference tus server: @tus/server with a @tus/file-store on DIR,
// listening on 127.0.0.1 (a port the OS picks).
//
//   node server.mjs DIR
//
// Prints one JSON line once it listens, `{"endpoint":"http://127.0.0.1:PORT/files/"}`,
// and serves until killed. pickup-bench (bench/src/tus.rs) measures uploads
// to it beside uploads to Pickup's /tus/; the interop test's scripts can
// be pointed at it as well.

import http from 'node:http'
import { Server } from '@tus/server'
import { FileStore } from '@tus/file-store'

const [dir] = process.argv.slice(2)
if (!dir) {
  console.error('usage: node server.mjs DIR')
  process.exit(2)
}

const tus = new Server({
  path: '/files',
  datastore: new FileStore({ directory: dir }),
})
const server = http.createServer((req, res) => tus.handle(req, res))
server.listen(0, '127.0.0.1', () => {
  const { port } = server.address()
  console.log(JSON.stringify({ endpoint: `http://127.0.0.1:${port}/files/` }))
})
