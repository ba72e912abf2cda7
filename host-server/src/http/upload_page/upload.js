// Pickup's upload page: a small tus 1.0.0 client for the relay's /tus/
// endpoint (PROTOCOL: see the relay's src/http/tus and its contract).
//
//   one file     POST /tus/ (no batch)             -> Location, Pickup-Code
//   several      POST /tus/batches                 -> handle
//                POST /tus/ per file, batch=handle -> Location
//                POST /tus/batches/{handle}/close  -> code
//   each file    PATCH {Location} in CHUNK pieces, Upload-Offset = the relay's
//
// Resume: the batch handle and every file's upload URL are kept in
// localStorage under the files' fingerprint (name, size, lastModified), so
// choosing the same files again after a reload asks the relay how far each
// got (GET /tus/batches/{handle}, HEAD) and goes on from there. A failed
// PATCH is retried with backoff from the offset a HEAD reports. No
// Upload-Checksum: the relay would then keep nothing of an interrupted
// PATCH, so resuming would lose up to a whole CHUNK; without it every byte
// the relay made durable counts (TCP, or TLS, guards the bytes in transit).
'use strict';

(() => {
  const CHUNK = 8 * 1024 * 1024;   // bytes per PATCH: progress and resume granularity
  const MAX_ATTEMPTS = 8;          // failed requests in a row before giving up
  const MAX_WAIT_MS = 30000;       // longest backoff after a failure
  const MAX_RETRY_AFTER_S = 300;   // longest Retry-After waited for on the page
  const STORE = 'pickup-upload:';  // localStorage key prefix
  const TUS = { 'Tus-Resumable': '1.0.0' };

  const $ = (id) => document.getElementById(id);
  const ui = {
    form: $('form'), input: $('files'), drop: $('drop'), progress: $('progress'), status: $('status'),
    list: $('list'), retry: $('retry'), error: $('error'), done: $('done'),
    code: $('code'), link: $('link'), copy: $('copy'), copied: $('copied'),
    command: $('get-command'), again: $('again'),
  };
  let current = null;  // the files being sent, sorted (for retry)
  let busy = false;

  // ---- small helpers ------------------------------------------------------

  /** A failure to show the person; `retry` says a "Try again" may help. */
  class Failure extends Error {
    constructor(message, retry) { super(message); this.retry = retry; }
  }

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  function size(n) {
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
    return i === 0 ? `${n} B` : `${n.toFixed(1)} ${units[i]}`;
  }

  function b64(text) {
    const bytes = new TextEncoder().encode(text);
    let bin = '';
    bytes.forEach((b) => { bin += String.fromCharCode(b); });
    return btoa(bin);
  }

  /** One request with XMLHttpRequest (fetch cannot report upload progress).
   *  Resolves with { status, header(name), text }; status 0 is a network error. */
  function request(method, url, headers, body, onUpload) {
    return new Promise((resolve) => {
      const xhr = new XMLHttpRequest();
      xhr.open(method, url);
      Object.entries({ ...TUS, ...headers }).forEach(([k, v]) => xhr.setRequestHeader(k, v));
      if (onUpload) xhr.upload.onprogress = (e) => onUpload(e.loaded);
      const done = () => resolve({
        status: xhr.status,
        header: (name) => xhr.getResponseHeader(name),
        text: xhr.responseText || '',
      });
      xhr.onload = done;
      xhr.onerror = done;
      xhr.ontimeout = done;
      xhr.onabort = done;
      xhr.send(body === undefined ? null : body);
    });
  }

  /** What the relay said, for a person: a JSON `error`, else short plain text. */
  function said(r) {
    try {
      const j = JSON.parse(r.text);
      if (j && typeof j.error === 'string') return j.error;
    } catch (_) { /* not JSON */ }
    const t = r.text.replace(/<[^>]*>/g, ' ').replace(/\s+/g, ' ').trim();
    return t.length > 0 && t.length <= 300 ? t : `HTTP ${r.status}`;
  }

  /** The failure an answer means when it is not one to retry, or null. */
  function refusal(r, name) {
    const what = name ? `“${name}”` : 'These files';
    switch (r.status) {
      case 401: case 403:
        return new Failure('This relay accepts uploads only from signed-in users. '
          + 'Use the pickup program instead: pickup login, then pickup send.', false);
      case 413:
        return new Failure(`${what}: too large for this relay (${said(r)}).`, false);
      case 507:
        return new Failure('The relay’s storage is full. Try again later.', true);
      case 404: case 410:
        return new Failure('The upload is gone from the relay (expired or removed). '
          + 'Choose the files again to start over.', false);
      case 400: case 415: case 422:
        return new Failure(`${what}: the relay refused it: ${said(r)}`, false);
      default:
        return null;
    }
  }

  /** Whether to wait and try again; throws after MAX_ATTEMPTS failures or
   *  for an answer that retrying cannot fix. */
  async function backoff(r, attempt, name) {
    const refused = refusal(r, name);
    if (refused) throw refused;
    if (attempt >= MAX_ATTEMPTS) {
      throw new Failure(r.status === 0
        ? 'The connection to the relay keeps failing. Check your network and try again.'
        : `The relay keeps failing (${said(r)}). Try again later.`, true);
    }
    let wait = Math.min(MAX_WAIT_MS, 1000 * 2 ** (attempt - 1));
    if (r.status === 429) {
      const after = Number(r.header('Retry-After'));
      if (after > MAX_RETRY_AFTER_S) {
        // Longer than anyone watches a page for: say when to come back
        // rather than asking again and again meanwhile.
        const minutes = Math.ceil(after / 60);
        throw new Failure(`The relay is busy and asks to wait about ${minutes} minutes. `
          + 'Try again then.', true);
      }
      if (after > 0) wait = after * 1000;
      note(`The relay is busy; waiting ${Math.ceil(wait / 1000)} s before going on.`);
    } else {
      note(r.status === 0
        ? `Connection lost; trying again in ${Math.ceil(wait / 1000)} s.`
        : `The relay answered ${r.status}; trying again in ${Math.ceil(wait / 1000)} s.`);
    }
    await sleep(wait);
  }

  /** Sends `req()` until it answers one of `ok`, backing off in between. */
  async function insist(req, ok, name) {
    for (let attempt = 1; ; attempt += 1) {
      const r = await req();
      if (ok.includes(r.status)) return r;
      await backoff(r, attempt, name);
    }
  }

  // ---- what is kept for resuming ------------------------------------------

  function fingerprint(files) {
    return STORE + JSON.stringify(files.map((f) => [f.name, f.size, f.lastModified]));
  }
  function load(key) {
    try { return JSON.parse(localStorage.getItem(key)) || null; } catch (_) { return null; }
  }
  function save(key, saved) {
    try { localStorage.setItem(key, JSON.stringify(saved)); } catch (_) { /* private mode */ }
  }
  function forget(key) {
    try { localStorage.removeItem(key); } catch (_) { /* private mode */ }
  }

  // ---- the view ---------------------------------------------------------------

  function note(text) { ui.status.textContent = text; }

  function fail(err) {
    ui.progress.querySelector('h2').textContent = 'Upload stopped';
    note('');
    ui.error.textContent = err.message;
    ui.error.hidden = false;
    ui.retry.hidden = !err.retry;
    ui.form.hidden = false;
    document.body.dataset.state = 'error';
  }

  function row(file) {
    const li = document.createElement('li');
    const name = document.createElement('span');
    name.className = 'name';
    name.textContent = file.name;
    const bar = document.createElement('progress');
    bar.max = Math.max(file.size, 1);
    bar.value = 0;
    bar.setAttribute('aria-label', `Upload of ${file.name}`);
    const meta = document.createElement('span');
    meta.className = 'meta';
    meta.textContent = `Waiting · ${size(file.size)}`;
    li.append(name, bar, meta);
    ui.list.append(li);
    return { file, li, bar, meta, url: null, offset: 0 };
  }

  function show(entry, sent) {
    entry.bar.value = entry.file.size === 0 ? 1 : sent;
    entry.li.dataset.offset = String(entry.offset);
    if (entry.offset >= entry.file.size) {
      entry.li.className = 'complete';
      entry.meta.textContent = `Uploaded · ${size(entry.file.size)}`;
    } else {
      entry.meta.textContent = `${size(sent)} of ${size(entry.file.size)}`;
    }
  }

  function overall(entries) {
    const total = entries.reduce((n, e) => n + e.file.size, 0);
    const sent = entries.reduce((n, e) => n + Math.min(e.bar.value, e.file.size), 0);
    const pct = total === 0 ? 100 : Math.floor((100 * sent) / total);
    note(`Uploading ${entries.length === 1 ? 'one file' : `${entries.length} files`}: `
      + `${size(sent)} of ${size(total)} (${pct} %)`);
  }

  function finished(code) {
    const link = `${window.location.origin}/c/${code}`;
    ui.code.textContent = code;
    ui.link.value = link;
    ui.command.textContent = `pickup get ${code}`;
    ui.copied.textContent = '';
    ui.progress.querySelector('h2').textContent = 'Uploaded';
    note('Every file is on the relay.');
    ui.done.hidden = false;
    document.body.dataset.state = 'done';
    document.body.dataset.code = code;
    ui.copy.focus();
  }

  // ---- the protocol -------------------------------------------------------------

  /** Creates the upload of `entry` (in `batch` if given); its URL and code. */
  async function create(entry, batch) {
    let meta = `filename ${b64(entry.file.name)}`;
    if (batch) meta += `,batch ${b64(batch)}`;
    const r = await insist(() => request('POST', '/tus/', {
      'Upload-Length': String(entry.file.size), 'Upload-Metadata': meta,
    }), [201], entry.file.name);
    const location = r.header('Location');
    if (!location) throw new Failure('The relay gave no upload address.', true);
    entry.url = new URL(location, window.location.href).pathname;
    entry.offset = 0;
    return r.header('Pickup-Code');
  }

  /** The relay's durable offset of `entry` (HEAD); its code if it has one. */
  async function head(entry) {
    const r = await insist(() => request('HEAD', entry.url, {}), [200], entry.file.name);
    entry.offset = Number(r.header('Upload-Offset')) || 0;
    return r.header('Pickup-Code');
  }

  /** PATCHes `entry` from the relay's offset to its end; the last code seen. */
  async function send(entry, entries) {
    let code = null;
    let attempt = 0;
    entry.li.dataset.resumedFrom = String(entry.offset);
    show(entry, entry.offset);
    overall(entries);
    if (entry.offset > 0 && entry.offset < entry.file.size) {
      entry.meta.textContent = `Resuming from ${size(entry.offset)} of ${size(entry.file.size)}`;
    }
    while (entry.offset < entry.file.size || (entry.file.size === 0 && !entry.sent)) {
      const start = entry.offset;
      const piece = entry.file.slice(start, Math.min(start + CHUNK, entry.file.size));
      const headers = {
        'Upload-Offset': String(start), 'Content-Type': 'application/offset+octet-stream',
      };
      const r = await request('PATCH', entry.url, headers, piece, (loaded) => {
        show(entry, start + loaded);
        overall(entries);
      });
      if (r.status === 204) {
        entry.offset = Number(r.header('Upload-Offset')) || start;
        entry.sent = true;
        code = r.header('Pickup-Code') || code;
        attempt = 0;
        show(entry, entry.offset);
        overall(entries);
        continue;
      }
      // Lost connection, 5xx, 409 (our offset is not the relay's), 429:
      // wait, then go on from the offset the relay holds.
      attempt += 1;
      await backoff(r, attempt, entry.file.name);
      code = (await head(entry)) || code;
      show(entry, entry.offset);
    }
    return code;
  }

  /** Uploads `files` (sorted), resuming what localStorage and the relay know. */
  async function upload(files) {
    const key = fingerprint(files);
    const saved = load(key) || {};
    ui.list.replaceChildren();
    const entries = files.map(row);
    let code = null;
    if (files.length === 1) {
      const [entry] = entries;
      if (saved.urls && saved.urls[0]) {
        entry.url = saved.urls[0];
        const r = await insist(() => request('HEAD', entry.url, {}), [200, 404, 410]);
        if (r.status === 200) {
          entry.offset = Number(r.header('Upload-Offset')) || 0;
          code = r.header('Pickup-Code');
        } else {
          entry.url = null;  // expired or ended: start over
        }
      }
      if (!entry.url) {
        code = await create(entry, null);
        save(key, { urls: [entry.url] });
      }
      code = (await send(entry, entries)) || code;
      if (!code) code = await head(entry);
    } else {
      let status = null;
      if (saved.batch) {
        const r = await insist(() => request('GET', `/tus/batches/${saved.batch}`,
          { Accept: 'application/json' }), [200, 404, 410]);
        if (r.status === 200) status = JSON.parse(r.text);  // else: gone, start over
      }
      if (status && !status.open && status.code) {
        entries.forEach((e) => { e.offset = e.file.size; show(e, e.file.size); });
        forget(key);
        return finished(status.code);
      }
      let batch = status ? saved.batch : null;
      const urls = status ? saved.urls || [] : [];
      if (!batch) {
        const r = await insist(() => request('POST', '/tus/batches', {}), [201]);
        batch = r.header('Pickup-Batch');
        if (!batch) throw new Failure('The relay gave no batch handle.', true);
      }
      save(key, { batch, urls });
      for (const [i, entry] of entries.entries()) {
        const known = urls[i] && status && status.files.find(
          (f) => `/tus/${batch}/${f.index}` === urls[i],
        );
        if (known) {
          entry.url = urls[i];
          entry.offset = known.offset;
        } else {
          await create(entry, batch);
          urls[i] = entry.url;
          save(key, { batch, urls });
        }
        show(entry, entry.offset);
      }
      for (const entry of entries) await send(entry, entries);
      const r = await insist(
        () => request('POST', `/tus/batches/${batch}/close`, { Accept: 'application/json' }),
        [200],
      );
      code = r.header('Pickup-Code') || JSON.parse(r.text).code;
    }
    if (!code) throw new Failure('The relay gave no pickup code.', true);
    forget(key);
    return finished(code);
  }

  async function start(files) {
    if (busy || files.length === 0) return;
    busy = true;
    current = files;
    ui.error.hidden = true;
    ui.retry.hidden = true;
    ui.done.hidden = true;
    ui.drop.disabled = true;
    ui.form.hidden = true;
    ui.progress.hidden = false;
    ui.progress.querySelector('h2').textContent = 'Uploading';
    document.body.dataset.state = 'uploading';
    note('Starting…');
    try {
      await upload(files);
    } catch (err) {
      fail(err instanceof Failure ? err : new Failure(`Something went wrong: ${err}`, true));
    } finally {
      busy = false;
      ui.drop.disabled = false;
    }
  }

  function chosen(list) {
    const files = Array.from(list).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1
      : a.size - b.size || a.lastModified - b.lastModified));
    start(files);
  }

  // ---- wiring ---------------------------------------------------------------------

  ui.drop.addEventListener('click', () => ui.input.click());
  ui.input.addEventListener('change', () => {
    chosen(ui.input.files);
    ui.input.value = '';  // choosing the same files again fires `change` again
  });
  ['dragenter', 'dragover'].forEach((type) => document.addEventListener(type, (e) => {
    e.preventDefault();
    if (!busy) ui.drop.classList.add('over');
  }));
  ['dragleave', 'drop'].forEach((type) => document.addEventListener(type, (e) => {
    e.preventDefault();
    ui.drop.classList.remove('over');
  }));
  document.addEventListener('drop', (e) => {
    if (e.dataTransfer && e.dataTransfer.files.length > 0) chosen(e.dataTransfer.files);
  });
  ui.retry.addEventListener('click', () => { if (current) start(current); });
  ui.again.addEventListener('click', () => {
    ui.done.hidden = true;
    ui.progress.hidden = true;
    ui.list.replaceChildren();
    ui.form.hidden = false;
    document.body.dataset.state = 'idle';
    ui.drop.focus();
  });
  ui.copy.addEventListener('click', async () => {
    try {
      await navigator.clipboard.writeText(ui.link.value);
      ui.copied.textContent = 'Link copied.';
    } catch (_) {
      // No clipboard (plain HTTP, or refused): select it for the person to copy.
      ui.link.focus();
      ui.link.select();
      ui.copied.textContent = 'Press Ctrl+C (or ⌘C) to copy the selected link.';
    }
  });
  document.body.dataset.state = 'idle';
})();
