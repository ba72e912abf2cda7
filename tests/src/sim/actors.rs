//! The terminals: starting and restarting their protocol machines, and
//! what their events mean to the run.

use super::*;

impl<'a> World<'a> {
    /// Handles the events of actor `i`; whether there were any.
    pub(super) fn events(&mut self, i: usize) -> bool {
        let mut any = false;
        loop {
            let event = match self.actors[i].machine.as_mut() {
                Some(Machine::Up { session, .. }) => session.poll_event().map(Ev::Up),
                Some(Machine::Down { session, .. }) => session.poll_event().map(Ev::Down),
                Some(Machine::Send { session, .. }) => session.poll_event().map(Ev::Send),
                Some(Machine::Listen { session, .. }) => session.poll_event().map(Ev::Listen),
                None => None,
            };
            let Some(event) = event else {
                return any;
            };
            any = true;
            self.trace(format_args!("actor {}: {event:?}", self.actors[i].id));
            self.on_event(i, event);
        }
    }

    pub(super) fn on_event(&mut self, i: usize, event: Ev) {
        let job = self.actors[i].job;
        match (job, event) {
            (_, Ev::Send(e)) => self.on_send_event(i, e),
            (Job::Listen(t), Ev::Listen(e)) => self.on_listen_event(i, t, e),
            (Job::Fetch { t, id }, Ev::Down(e)) => self.on_fetch_event(i, t, id, e),
            (_, Ev::Listen(e)) => unreachable!("a listener's event {e:?} for {job:?}"),
            (_, event) => self.on_transfer_event(i, job, event),
        }
    }

    fn on_transfer_event(&mut self, i: usize, job: Job, event: Ev) {
        match event {
            Ev::Up(upload::Event::Failed(upload::Error::Auth(AuthError::Refused)))
                if job == Job::Impostor =>
            {
                self.report.impostors += 1;
                self.actors[i].outcome = Some(Ok(()));
            }
            Ev::Up(
                upload::Event::Authenticated
                | upload::Event::Granted { .. }
                | upload::Event::Uploading { .. }
                | upload::Event::Linked { .. }
                | upload::Event::Verified { .. }
                | upload::Event::Complete { .. },
            ) if job == Job::Impostor => panic!("a terminal with a wrong key got {event:?}"),
            Ev::Up(upload::Event::Granted {
                code,
                token,
                expires_at,
            }) => {
                let Job::Upload(b) = job else { unreachable!() };
                self.actors[i].token = Some(token);
                if self.batches[b].code.is_none() {
                    self.batches[b].code = Some(code);
                    self.batches[b].expires_at = Some(expires_at);
                }
                assert_eq!(self.batches[b].code, Some(code), "granted a different code");
                // Start this batch's downloads: sometimes at once (they wait
                // for the upload), sometimes later; the late one after expiry.
                for d in 0..self.actors.len() {
                    let waiting = &self.actors[d];
                    if waiting.start_at.is_some()
                        || waiting.machine.is_some()
                        || waiting.outcome.is_some()
                    {
                        continue;
                    }
                    if waiting.job == Job::Download(b) {
                        let delay = Duration::from_millis(self.rng.range(0, 20_000));
                        self.actors[d].start_at = Some(self.now + delay);
                    } else if waiting.job == Job::Late(b) {
                        let at = Instant::from_millis((expires_at + 60) * 1000);
                        self.actors[d].start_at = Some(at.max(self.now));
                    }
                }
            }
            Ev::Up(upload::Event::Linked { .. }) => self.report.linked += 1,
            Ev::Up(upload::Event::Complete { code }) => {
                let Job::Upload(b) = job else { unreachable!() };
                assert_eq!(self.batches[b].code, Some(code));
                self.batches[b].uploaded = true;
                self.report.uploads += 1;
                self.actors[i].outcome = Some(Ok(()));
                if b == 0 {
                    self.batch_for_notices(true);
                }
                if self.book.is_some() {
                    // Complete only after a BatchComplete that followed
                    // the relay's Done for NamedPut: the names are bound.
                    self.check_bound(b);
                    self.report.named_uploads += 1;
                    self.start_named_downloads(b);
                }
            }
            Ev::Up(upload::Event::Failed(upload::Error::Relay(
                ErrorCode::Expired | ErrorCode::UnknownToken,
            ))) if self.expired(job) => {
                // The code's lifetime ended before the upload did. A
                // `Resume` then gets `Expired`, or `UnknownToken` once the
                // sweeper has removed the batch (PROTOCOL.md 5.2).
                self.actors[i].outcome = Some(Ok(()));
                self.give_up_on_batch(job);
            }
            Ev::Up(upload::Event::Failed(e)) => {
                panic!("upload of batch {job:?} failed: {e}; {}", self.status())
            }
            Ev::Up(upload::Event::LinkLost) | Ev::Down(download::Event::LinkLost) => {
                self.close(i, Close::Graceful);
            }
            Ev::Down(download::Event::Replaced { .. }) => self.report.replaced += 1,
            Ev::Down(download::Event::Complete | download::Event::Verified { .. })
                if matches!(job, Job::Named(_)) =>
            {
                self.check_named_download(i, &event);
            }
            Ev::Down(download::Event::Complete) => {
                // A late download finds the batch kept past its code's
                // expiry for a notice's target still reading it (the
                // manifest's check made sure the store kept it).
                let (Job::Download(b) | Job::Late(b)) = job else {
                    panic!("download {job:?} completed, but it should have been refused")
                };
                assert!(
                    matches!(job, Job::Download(_)) || self.notices.is_some(),
                    "download {job:?} completed, but it should have been refused"
                );
                let Some(Machine::Down { sink, .. }) = &self.actors[i].machine else {
                    unreachable!()
                };
                let spec = &self.specs[b];
                for (f, content) in spec.contents.iter().enumerate() {
                    assert!(
                        sink.finished[f],
                        "download complete but file {f} not finished"
                    );
                    assert!(
                        sink.files[f] == *content,
                        "downloaded file {f} differs from the upload"
                    );
                }
                self.report.downloads += 1;
                self.actors[i].outcome = Some(Ok(()));
            }
            Ev::Down(download::Event::Failed(e)) => match (job, e) {
                (Job::Bogus, download::Error::Relay(ErrorCode::UnknownCode)) => {
                    self.actors[i].outcome = Some(Ok(()));
                }
                (Job::Late(_) | Job::Download(_), download::Error::Relay(ErrorCode::Expired))
                    if self.expired(job) =>
                {
                    self.report.expired += 1;
                    self.actors[i].outcome = Some(Ok(()));
                }
                _ => panic!("download {job:?} failed: {e}; {}", self.status()),
            },
            Ev::Down(download::Event::Verified { file }) => {
                // A late download finds the batch kept past its code's
                // expiry for a notice's target still reading it (the
                // manifest's check made sure the store kept it).
                let (Job::Download(b) | Job::Late(b)) = job else {
                    panic!("download {job:?} verified a file, but it should have been refused")
                };
                assert!(
                    matches!(job, Job::Download(_)) || self.notices.is_some(),
                    "download {job:?} verified a file, but it should have been refused"
                );
                let Some(Machine::Down { sink, .. }) = &self.actors[i].machine else {
                    unreachable!()
                };
                assert!(
                    sink.files[usize::from(file)] == self.specs[b].contents[usize::from(file)],
                    "file {file} verified with wrong bytes"
                );
            }
            _ => {}
        }
    }

    /// Whether the batch `job` is about has expired by now.
    pub(super) fn expired(&self, job: Job) -> bool {
        let b = match job {
            Job::Upload(b) | Job::Download(b) | Job::Late(b) => b,
            Job::Push | Job::Listen(_) | Job::Fetch { .. } => 0,
            Job::Bogus | Job::Named(_) | Job::Impostor => return false,
        };
        let unix = self.now.as_millis() / 1000;
        self.batches[b].expires_at.is_some_and(|e| unix >= e)
    }

    /// An upload that ran out of time: its downloads cannot succeed, and
    /// whether they see `Expired` depends on timing; they stop here.
    pub(super) fn give_up_on_batch(&mut self, job: Job) {
        let Job::Upload(b) = job else {
            return;
        };
        if b == 0 {
            self.batch_for_notices(false);
        }
        for a in &mut self.actors {
            if matches!(a.job, Job::Download(x) | Job::Late(x) if x == b) && a.outcome.is_none() {
                a.outcome = Some(Ok(()));
            }
        }
    }

    pub(super) fn start(&mut self, i: usize) {
        let job = self.actors[i].job;
        self.trace(format_args!("actor {}: starts {job:?}", self.actors[i].id));
        let machine = match job {
            Job::Upload(b) => {
                let config = self.upload_config();
                self.upload_machine(b, config, None, self.book.is_some().then(named::terminal))
            }
            Job::Impostor => {
                let config = self.upload_config();
                self.upload_machine(0, config, None, Some(named::impostor()))
            }
            Job::Named(n) => {
                let config = self.download_config(false);
                let book = self.book.as_ref().expect("a seed with named files");
                self.actors[i].since = book.history(n).len().saturating_sub(1);
                self.named_machine(n, config, MemFiles::default())
            }
            Job::Download(b) | Job::Late(b) => {
                let code = self.batches[b]
                    .code
                    .expect("downloads start after the grant");
                let config = self.download_config(!self.batches[b].uploaded);
                Machine::Down {
                    session: Box::new(download::Session::new(config, code)),
                    config,
                    sink: MemFiles::default(),
                }
            }
            Job::Push | Job::Listen(_) | Job::Fetch { .. } => {
                self.notice_machine(job, MemFiles::default())
            }
            Job::Bogus => {
                let config = self.download_config(false);
                let code = self.actors[i].bogus_code.expect("a bogus code");
                Machine::Down {
                    session: Box::new(download::Session::new(config, code)),
                    config,
                    sink: MemFiles::default(),
                }
            }
        };
        self.actors[i].machine = Some(machine);
        // A fifth of the terminals restart once, at a random moment.
        if self.rng.chance(200_000) && !matches!(job, Job::Bogus | Job::Impostor) {
            let at = self.now + Duration::from_millis(self.rng.range(100, 30_000));
            self.actors[i].restart_at = Some(at);
        }
        self.connect(i);
        if job == Job::Push {
            self.sender_started(i);
        }
    }

    /// An upload of batch `b` (resuming with `token` if given), named and
    /// authenticated if given a credential.
    pub(super) fn upload_machine(
        &self,
        b: usize,
        config: upload::Config,
        token: Option<ResumeToken>,
        credential: Option<Credential<'static>>,
    ) -> Machine<'a> {
        let spec: &'a BatchSpec = &self.specs[b];
        let metas: Vec<upload::FileMeta<'a>> = spec
            .names
            .iter()
            .zip(&spec.contents)
            .map(|(n, c)| upload::FileMeta {
                name: n.as_str(),
                size: c.len() as u64,
                sha1: Sha1Digest::of(c),
            })
            .collect();
        let mut session = match token {
            Some(token) => upload::Session::resume(config, &metas, token),
            // New, or restarted before the grant arrived: announce again.
            None => upload::Session::new(config, &metas),
        }
        .unwrap_or_else(|e| panic!("a valid batch refused: {e}"));
        with_attrs(&mut session);
        if let Some(credential) = credential {
            session.authenticate(credential);
            session.set_named(true);
        }
        Machine::Up {
            session: Box::new(session),
            config,
            source: &spec.contents,
        }
    }

    pub(super) fn upload_config(&mut self) -> upload::Config {
        // Slow links get timeouts to match, as a serial deployment would.
        let slow = self.faults.bytes_per_ms != 0 && self.faults.bytes_per_ms < 100;
        upload::Config {
            max_frame: [64, 512, 4096, 16_384][self.rng.below(4) as usize],
            retransmit_timeout: Duration::from_millis(if slow { 8_000 } else { 2_000 }),
            idle_timeout: Duration::from_secs(if slow { 60 } else { 15 }),
            keepalive_interval: Duration::from_secs(5),
            instant_upload: self.rng.chance(800_000),
            max_window: if slow {
                2048
            } else {
                [1024, 65_536, 8 << 20][self.rng.below(3) as usize]
            },
            // Not drawn: a new draw would change what every seed does.
            page_link: false,
            relay_limits: false,
            // The simulated link corrupts and drops bytes: COBS.
            length_prefix: false,
        }
    }

    pub(super) fn download_config(&mut self, early: bool) -> download::Config {
        let slow = self.faults.bytes_per_ms != 0 && self.faults.bytes_per_ms < 100;
        download::Config {
            max_frame: [64, 512, 4096, 16_384][self.rng.below(4) as usize],
            window: if slow {
                2048
            } else {
                [256, 4096, 1 << 20][self.rng.below(3) as usize]
            },
            retransmit_timeout: Duration::from_millis(if slow { 8_000 } else { 2_000 }),
            idle_timeout: Duration::from_secs(if slow { 60 } else { 15 }),
            keepalive_interval: Duration::from_secs(5),
            manifest_only: false,
            // An early downloader waits for the upload; a later one finds it ready.
            wait_until_ready: early.then(|| Duration::from_millis(1_000)),
            // Half the downloads leave verification to the sink (which
            // reads the file back: `Sink::digest`'s default), as the CLI
            // does with its hashing thread.
            hashing: if self.rng.chance(500_000) {
                download::Hashing::BySink
            } else {
                download::Hashing::InSession
            },
            // Early downloaders ask for file attributes, so the relay's
            // FileAttrs go through the faults too; drawn from no new random
            // number, so every seed replays the faults it had before.
            file_attrs: early,
            length_prefix: false,
        }
    }

    /// The terminal process restarts: its session is gone; an upload
    /// resumes with its token, a download reuses what is on its disk.
    pub(super) fn restart(&mut self, i: usize) {
        self.report.restarts += 1;
        self.trace(format_args!("actor {}: restarts", self.actors[i].id));
        self.close(i, Close::Cut);
        self.actors[i].reconnect_at = None;
        let job = self.actors[i].job;
        match (job, self.actors[i].machine.take()) {
            (Job::Upload(b), Some(Machine::Up { config, .. })) => {
                let credential = self.book.is_some().then(named::terminal);
                let token = self.actors[i].token;
                self.actors[i].machine = Some(self.upload_machine(b, config, token, credential));
            }
            (
                Job::Named(n),
                Some(Machine::Down {
                    config, mut sink, ..
                }),
            ) => {
                sink.finished.iter_mut().for_each(|f| *f = false);
                self.actors[i].machine = Some(self.named_machine(n, config, sink));
            }
            (Job::Download(b) | Job::Late(b), Some(Machine::Down { config, sink, .. })) => {
                let code = self.batches[b].code.expect("a started download has a code");
                let mut sink = sink;
                // The finished files were renamed into place; their partial
                // state is what is on disk.
                sink.finished.iter_mut().for_each(|f| *f = false);
                self.actors[i].machine = Some(Machine::Down {
                    session: Box::new(download::Session::new(config, code)),
                    config,
                    sink,
                });
            }
            (Job::Listen(t), Some(_)) => self.restart_listener(i, t),
            (Job::Push, Some(_)) => {
                // The application persisted its push ids: the request in
                // progress is made again with the same one.
                let machine = self.notice_machine(job, MemFiles::default());
                self.actors[i].machine = Some(machine);
                self.connect(i);
                self.sender_started(i);
                return;
            }
            (Job::Fetch { .. }, Some(Machine::Down { sink, .. })) => {
                let mut sink = sink;
                sink.finished.iter_mut().for_each(|f| *f = false);
                self.actors[i].machine = Some(self.notice_machine(job, sink));
            }
            (_, other) => self.actors[i].machine = other,
        }
        self.connect(i);
    }
}

/// Every simulated upload gives its first file attributes, the same ones
/// after a restart (a re-announcement that differed would be another
/// batch), so `FileAttrs` crosses the faulty links both ways: drawn from
/// no random number, so each seed keeps the faults it had before.
pub(super) fn with_attrs<const F: usize>(session: &mut upload::Session<'_, F>) {
    session.set_attrs(pickup_proto::message::FileAttrs {
        index: 0,
        executable: true,
        mtime: 1_700_000_000,
    });
}
