//! The relay's replies to a download: welcome, manifest and its entries,
//! data (written in order, gaps restart the stream) and errors.

use super::{Control, Error, Event, File, Hashing, Phase, Session, Sink};
use crate::error::ErrorCode;
use crate::frame::{self, Frame};
use crate::hash::Sha1Hasher;
use crate::message::{self, ManifestEntry, Message};
use crate::storage::ReadAt;
use crate::time::{Duration, Instant};
use crate::PROTOCOL_VERSION;

impl<const F: usize> Session<'_, F> {
    /// Handles one frame from the relay (see [`Machine::handle_frame`]);
    /// undecodable frames are ignored.
    ///
    /// [`Machine::handle_frame`]: crate::drive::Machine::handle_frame
    pub fn handle_frame<S: Sink + ?Sized>(
        &mut self,
        now: Instant,
        frame: Frame<'_>,
        sink: &mut S,
    ) -> Result<(), <S as ReadAt>::Error> {
        match Message::decode_from_relay(frame) {
            Ok(msg) => self.handle_message(now, msg, sink),
            Err(_) => Ok(()),
        }
    }

    /// Handles one decoded message. Storage errors are returned as they are;
    /// the session stays consistent and the timers retry.
    pub fn handle_message<S: Sink + ?Sized>(
        &mut self,
        now: Instant,
        msg: Message<'_>,
        sink: &mut S,
    ) -> Result<(), <S as ReadAt>::Error> {
        if matches!(self.phase, Phase::Idle | Phase::Done | Phase::Failed) {
            return Ok(());
        }
        self.last_heard = now;
        #[cfg(any(test, feature = "auth"))]
        if self.phase == Phase::Authenticating {
            if let Some(outcome) = self.auth.as_mut().and_then(|h| h.handle(&msg)) {
                return self.on_auth(now, outcome, sink);
            }
        }
        match msg {
            Message::Welcome(w) if self.phase == Phase::AwaitWelcome => {
                if w.version != PROTOCOL_VERSION {
                    self.fail(Error::Relay(ErrorCode::UnsupportedVersion));
                    return Ok(());
                }
                self.peer_max_frame =
                    (w.max_frame as usize).clamp(frame::MIN_FRAME_LEN, frame::MAX_FRAME_LEN);
                self.framing = frame::Framing::negotiated(self.config.length_prefix, w.caps);
                self.push_event(Event::Connected);
                #[cfg(any(test, feature = "auth"))]
                if let Some(h) = self.auth.as_mut() {
                    h.restart();
                    self.phase = Phase::Authenticating;
                    self.retry_at = Some(now + self.config.retransmit_timeout);
                    return Ok(());
                }
                self.begin(now, sink)?;
            }
            // A named file's manifest carries a handle for this link: it is
            // the code the reads name from now on.
            Message::Manifest(m)
                if self.phase == Phase::AwaitManifest
                    && (m.code == self.code || self.is_named()) =>
            {
                self.code = m.code;
                match self.expected_files {
                    Some(n) if n != m.files => {
                        self.fail(Error::ManifestChanged);
                        return Ok(());
                    }
                    Some(_) => {}
                    None if m.files == 0 => {
                        self.fail(Error::ManifestChanged);
                        return Ok(());
                    }
                    None if usize::from(m.files) > F => {
                        self.fail(Error::TooManyFiles);
                        return Ok(());
                    }
                    None => self.expected_files = Some(m.files),
                }
                self.entries_seen = 0;
                self.manifest_ready = m.ready;
                self.push_event(Event::Manifest {
                    files: m.files,
                    total_size: m.total_size,
                    received: m.received,
                    ready: m.ready,
                    expires_at: m.expires_at,
                });
                self.retry_at = Some(now + self.config.retransmit_timeout);
            }
            #[cfg(any(test, feature = "file-attrs"))]
            Message::FileAttrs(a)
                if self.phase == Phase::AwaitManifest && self.config.file_attrs =>
            {
                sink.attrs(&a)
            }
            Message::ManifestEntry(e) if self.phase == Phase::AwaitManifest => {
                self.on_entry(now, e, sink)?
            }
            Message::Data(d) if self.phase == Phase::Reading => self.on_data(now, d, sink)?,
            Message::Error(e) => self.on_error(now, e),
            Message::Goodbye => self.link_lost(),
            _ => {}
        }
        Ok(())
    }

    /// The relay accepted the session (and its credential): read at once,
    /// or fetch the manifest.
    fn begin<S: Sink + ?Sized>(
        &mut self,
        now: Instant,
        sink: &mut S,
    ) -> Result<(), <S as ReadAt>::Error> {
        if self.holds_manifest() {
            // Every entry arrived on an earlier link and said the
            // batch is ready: nothing in it can change, and each
            // Read is authorised on its own, so read at once.
            self.start_reading(now, sink)
        } else {
            self.phase = Phase::AwaitManifest;
            self.expect_manifest();
            self.push_control(Control::Fetch);
            self.retry_at = Some(now + self.config.retransmit_timeout);
            Ok(())
        }
    }

    /// A fetch goes out: its entries count from 0. A named file's entries
    /// count only after its `Manifest`, which carries the read handle of
    /// this fetch: an entry whose manifest was lost would leave the reads
    /// naming an older link's handle, which the relay no longer knows.
    pub(super) fn expect_manifest(&mut self) {
        self.entries_seen = if self.is_named() { u16::MAX } else { 0 };
    }

    #[cfg(any(test, feature = "auth"))]
    fn on_auth<S: Sink + ?Sized>(
        &mut self,
        now: Instant,
        outcome: crate::auth::Outcome,
        sink: &mut S,
    ) -> Result<(), <S as ReadAt>::Error> {
        use crate::auth::Outcome;
        match outcome {
            Outcome::Pending => self.retry_at = Some(now + self.config.retransmit_timeout),
            Outcome::Authenticated => {
                self.push_event(Event::Authenticated);
                return self.begin(now, sink);
            }
            Outcome::Failed(e) => self.fail(Error::Auth(e)),
        }
        Ok(())
    }

    fn on_error(&mut self, now: Instant, e: message::Error) {
        if crate::drive::noise(&e) || crate::drive::surplus_answer(&e) {
            return;
        }
        match e.code {
            ErrorCode::RateLimited
            | ErrorCode::Busy
            | ErrorCode::Internal
            | ErrorCode::BadFrame => {
                // Transient: retry on the timer, no earlier than the relay asks.
                let wait = Duration::from_millis(u64::from(e.retry_after_ms))
                    .max(self.config.retransmit_timeout);
                self.retry_at = Some(now + wait);
                if matches!(e.code, ErrorCode::RateLimited | ErrorCode::Busy) {
                    // A refusal the user should hear of; the others are noise.
                    self.push_event(Event::Waiting {
                        reason: e.code,
                        retry_in_ms: u32::try_from(wait.as_millis()).unwrap_or(u32::MAX),
                    });
                }
            }
            ErrorCode::NotReady
                if self.config.wait_until_ready.is_some() && self.phase == Phase::Reading =>
            {
                self.phase = Phase::AwaitManifest;
                self.retry_at = Some(now + self.config.wait_until_ready.unwrap_or(Duration::ZERO));
            }
            ErrorCode::UnexpectedMessage | ErrorCode::IdleTimeout | ErrorCode::ShuttingDown => {
                self.link_lost()
            }
            // A named file's reads name the handle of the latest fetch on
            // this link; a repeated fetch answered after the name was
            // replaced made a newer handle, and the reads went out under
            // the older one before its manifest arrived. Fetch again: the
            // answer names the handle the relay serves (and says whether
            // the content changed).
            ErrorCode::UnknownCode if self.is_named() && self.phase == Phase::Reading => {
                self.phase = Phase::AwaitManifest;
                self.expect_manifest();
                self.push_control(Control::Fetch);
                self.retry_at = Some(now + self.config.retransmit_timeout);
            }
            // Another refusal of a read under the stale handle (the link
            // repeated it, or more reads were out) while that fetch is on
            // its way: it answers the reads, not the fetch.
            ErrorCode::UnknownCode
                if self.is_named()
                    && self.phase == Phase::AwaitManifest
                    && e.kind == message::Kind::Read as u8 => {}
            code => self.fail(Error::Relay(code)),
        }
    }

    fn on_entry<S: Sink + ?Sized>(
        &mut self,
        now: Instant,
        e: ManifestEntry<'_>,
        sink: &mut S,
    ) -> Result<(), <S as ReadAt>::Error> {
        let Some(expected) = self.expected_files else {
            return Ok(());
        };
        if e.index != self.entries_seen || e.index >= expected {
            // Out of order (an entry was lost): the timer fetches the manifest again.
            return Ok(());
        }
        match self.files.get(usize::from(e.index)) {
            // A name was bound to other content since the last link: what
            // was read of the old content must not be continued with the new.
            Some(f) if (f.size != e.size || f.sha1 != e.sha1) && self.is_named() => {
                self.replace_file(&e, sink)?;
            }
            Some(f) if f.size != e.size || f.sha1 != e.sha1 => {
                self.fail(Error::ManifestChanged);
                return Ok(());
            }
            Some(_) => {}
            None => {
                if !self.config.manifest_only && message::validate_name(e.name).is_err() {
                    self.fail(Error::Relay(ErrorCode::InvalidName));
                    return Ok(());
                }
                let mut local = sink.open(&e)?;
                if local > e.size {
                    // More than the file holds: not a prefix of it (a
                    // named file replaced by a shorter one since an
                    // earlier run). Kept, it would outlive the download.
                    sink.truncate(e.index)?;
                    local = 0;
                }
                // Entries arrive in index order and `expected <= F`, so this fits.
                let _ = self.files.push(File {
                    size: e.size,
                    sha1: e.sha1,
                    local,
                    done: false,
                });
                self.push_event(Event::Entry {
                    file: e.index,
                    size: e.size,
                    sha1: e.sha1,
                    received: e.received,
                    local,
                });
            }
        }
        self.entries_seen += 1;
        if self.entries_seen < expected {
            return Ok(());
        }
        if self.config.manifest_only {
            self.finish_session(now);
        } else if !self.manifest_ready {
            match self.config.wait_until_ready {
                Some(wait) => {
                    self.push_event(Event::NotReady {
                        received: 0,
                        total: self.total_size(),
                    });
                    self.retry_at = Some(now + wait);
                }
                None => self.fail(Error::Relay(ErrorCode::NotReady)),
            }
        } else {
            self.start_reading(now, sink)?;
        }
        Ok(())
    }

    /// The named file `e.index` holds other content now: forget its bytes
    /// so far and read it from 0 when its turn comes.
    fn replace_file<S: Sink + ?Sized>(
        &mut self,
        e: &ManifestEntry<'_>,
        sink: &mut S,
    ) -> Result<(), <S as ReadAt>::Error> {
        let Some(f) = self.files.get_mut(usize::from(e.index)) else {
            return Ok(());
        };
        sink.replace(e)?;
        *f = File {
            size: e.size,
            sha1: e.sha1,
            local: 0,
            done: false,
        };
        if self.current == e.index {
            self.received = 0;
            self.prefix_pending = false;
            self.hasher = Sha1Hasher::new();
            self.credit_end = 0;
        }
        self.progress_dirty = true;
        self.push_event(Event::Replaced { file: e.index });
        Ok(())
    }

    /// Whether the whole manifest of a ready batch is known, and its reads
    /// need no fetch on a new link (a named file's handle does).
    fn holds_manifest(&self) -> bool {
        self.manifest_ready
            && !self.is_named()
            && !self.config.manifest_only
            && self.expected_files == Some(self.files.len() as u16)
    }

    /// The manifest is complete and the batch ready: read the current file.
    fn start_reading<S: Sink + ?Sized>(
        &mut self,
        now: Instant,
        sink: &mut S,
    ) -> Result<(), <S as ReadAt>::Error> {
        self.phase = Phase::Reading;
        let resuming = self
            .files
            .get(usize::from(self.current))
            .is_some_and(|f| !f.done)
            && (self.received > 0 || self.prefix_pending);
        if resuming {
            // Reconnected mid-file: continue where the bytes stopped.
            self.request_read(now);
            Ok(())
        } else {
            self.advance(now, sink)
        }
    }

    fn on_data<S: Sink + ?Sized>(
        &mut self,
        now: Instant,
        d: message::Data<'_>,
        sink: &mut S,
    ) -> Result<(), <S as ReadAt>::Error> {
        if d.file != self.current || self.prefix_pending {
            return Ok(());
        }
        let Some(f) = self.files.get(usize::from(self.current)).copied() else {
            return Ok(());
        };
        if d.offset != self.received {
            // Data of the stream before our last Read keeps coming, at
            // rising offsets, until the restarted stream begins again at
            // `received`. An offset below one already seen is a stream
            // that began later, and a gap in it means its first frames
            // were lost (as is any gap while no older stream can arrive).
            let restarted = d.offset < self.stale_until;
            self.stale_until = self.stale_until.max(d.offset);
            if d.offset > self.received && (!self.restart_pending || restarted) {
                // A gap: something was lost. Restart at the first missing byte.
                self.restart_after_loss(now);
                self.stale_until = d.offset;
            }
            return Ok(());
        }
        let end = self.received.saturating_add(d.bytes.len() as u64);
        if end > f.size || d.bytes.is_empty() {
            return Ok(());
        }
        sink.write_at(self.current, self.received, d.bytes)?;
        if self.config.hashing == Hashing::InSession {
            self.hasher.update(d.bytes);
        }
        self.received = end;
        self.credit.arrived(d.bytes.len() as u64);
        self.restart_pending = false;
        self.stale_until = 0;
        self.progress_dirty = true;
        self.retry_at = Some(now + self.config.retransmit_timeout);
        if self.received == f.size {
            return self.complete_file(now, sink);
        }
        // Credit every quarter of it: an Ack lost on the way leaves the
        // relay three quarters of a credit to send until the next arrives.
        let credit = u64::from(self.credit.get());
        if self.credit_end < f.size
            && self.credit_end.saturating_sub(self.received) <= credit - credit / 4
        {
            self.push_control(Control::Ack);
        }
        Ok(())
    }
}
