//! [`RelayScript`]: [`drive_relay`](super::drive_relay) inputs written
//! operation by operation, for seeds and tests.

/// Writes [`drive_relay`](super::drive_relay) inputs operation by operation (seeds and tests).
#[derive(Debug, Clone)]
pub struct RelayScript(pub(super) Vec<u8>);

impl RelayScript {
    /// A script with the given setup byte (see [`drive_relay`](super::drive_relay)).
    pub fn new(setup: u8) -> Self {
        RelayScript(vec![setup])
    }

    fn op(&mut self, t: u8, op: u8, operands: &[u8]) -> &mut Self {
        self.0.push(t * 10 + op);
        self.0.extend_from_slice(operands);
        self
    }

    pub(super) fn say(&mut self, t: u8, sel: u8, arg: u8, more: &[u8]) -> &mut Self {
        self.op(t, 4, &[[sel, arg].as_slice(), more].concat())
    }

    /// Terminal `t` connects.
    pub fn connect(&mut self, t: u8) -> &mut Self {
        self.op(t, 0, &[])
    }

    /// Terminal `t` disconnects.
    pub fn disconnect(&mut self, t: u8) -> &mut Self {
        self.op(t, 1, &[])
    }

    /// The clock moves on by `ms` (below 32768).
    pub fn advance_ms(&mut self, ms: u16) -> &mut Self {
        self.op(0, 2, &(ms & 0x7fff).to_le_bytes())
    }

    /// The clock moves on by `secs` (below 32768).
    pub fn advance_secs(&mut self, secs: u16) -> &mut Self {
        self.op(0, 2, &(secs | 0x8000).to_le_bytes())
    }

    /// Terminal `t` says hello with `max_frame` 64, 300, 4096 or 65536 (`size` 0..4).
    pub fn hello(&mut self, t: u8, size: u8) -> &mut Self {
        self.say(t, 0, size % 4, &[])
    }

    /// Terminal `t` says hello as a peer relay (`Role::Relay`), `size` as
    /// in [`hello`](Self::hello).
    pub fn hello_as_relay(&mut self, t: u8, size: u8) -> &mut Self {
        self.say(t, 0, (size % 4) | 0x20, &[])
    }

    /// Connection `t` opens as peer relay r1 and authenticates with r1's
    /// key, each step transmitted.
    pub fn peer_signs_in(&mut self, t: u8) -> &mut Self {
        self.connect(t).hello_as_relay(t, 2).transmit(t);
        self.peer_auth(t)
            .transmit(t)
            .challenge_answer(t, true)
            .transmit(t)
    }

    /// Terminal `t` opens a batch of `files` (below 4) totalling `total` bytes.
    pub fn batch_open(&mut self, t: u8, files: u8, total: u16) -> &mut Self {
        self.say(t, 1, files % 4, &total.to_le_bytes())
    }

    /// Terminal `t` announces file `index` (below 4) with content `content`
    /// (index into the driver's contents: 700 bytes, "pickup", empty, a sentence).
    pub fn announce(&mut self, t: u8, index: u8, content: u8) -> &mut Self {
        self.say(t, 2, index % 4, &[content])
    }

    /// [`announce`](Self::announce) under the driver's name `name` (0 is
    /// `a.bin`, 1 `b.txt`...): another batch with the same content, where
    /// the same names would be a repeated announcement.
    pub fn announce_as(&mut self, t: u8, index: u8, content: u8, name: u8) -> &mut Self {
        self.say(t, 2, (name % 6) * 4 + index % 4, &[content])
    }

    /// Terminal `t` sends `len` honest bytes of file `index` at `offset`.
    pub fn data(&mut self, t: u8, index: u8, offset: u16, len: u8) -> &mut Self {
        let [a, b] = offset.to_le_bytes();
        self.say(t, 3, index % 4, &[a, b, len, 1])
    }

    /// Terminal `t` proves it holds file `index`.
    pub fn proof(&mut self, t: u8, index: u8) -> &mut Self {
        self.say(t, 4, index % 4, &[])
    }

    /// Terminal `t` resumes its batch with the token the relay gave.
    pub fn resume(&mut self, t: u8) -> &mut Self {
        self.say(t, 5, 0, &[])
    }

    /// Terminal `t` fetches the first batch the relay granted (`known`), or
    /// a code nobody was given.
    pub fn fetch(&mut self, t: u8, known: bool) -> &mut Self {
        self.say(t, 6, if known { 0 } else { 7 }, &[])
    }

    /// Terminal `t` reads `len` bytes of file `index` of the first batch from `offset`.
    pub fn read(&mut self, t: u8, index: u8, offset: u16, len: u16) -> &mut Self {
        let [a, b] = offset.to_le_bytes();
        let [c, d] = len.to_le_bytes();
        // arg picks the code (known[arg % n]) and the file (arg % 4): 8 * k + index.
        self.say(t, 7, index % 4, &[a, b, c, d])
    }

    /// Terminal `t` acknowledges file `index` up to `offset`, with `window`
    /// bytes more of credit (a downloader's `Ack`).
    pub fn ack(&mut self, t: u8, index: u8, offset: u16, window: u16) -> &mut Self {
        let [a, b] = offset.to_le_bytes();
        let [c, d] = window.to_le_bytes();
        self.say(t, 8, index % 4, &[a, b, c, d])
    }

    /// The driver takes terminal `t`'s output.
    pub fn transmit(&mut self, t: u8) -> &mut Self {
        self.op(t, 8, &[])
    }

    /// Due timers fire.
    pub fn timers(&mut self) -> &mut Self {
        self.op(0, 9, &[])
    }

    /// The relay crashes and restarts.
    pub fn crash(&mut self) -> &mut Self {
        self.op(0, 6, &[])
    }

    /// The relay sweeps expired batches.
    pub fn sweep(&mut self) -> &mut Self {
        self.op(0, 7, &[])
    }

    /// The input so far.
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// Terminal `t` uploads file A (700 bytes) as a one-file batch in
    /// `chunk`-byte data frames.
    pub fn upload_a(&mut self, t: u8, chunk: u8) -> &mut Self {
        self.hello(t, 2).transmit(t);
        self.batch_open(t, 1, 700).announce(t, 0, 0).transmit(t);
        let mut off = 0u16;
        while off < 700 {
            let len = u16::from(chunk).min(700 - off) as u8;
            self.data(t, 0, off, len);
            off += u16::from(len);
        }
        self.transmit(t).timers().transmit(t)
    }
}
