//! A simulated byte stream with seeded faults.
//!
//! A [`Pipe`] carries one direction of a link. Every write is one unit of
//! loss (a TCP segment, a UART burst): it may be dropped, delivered twice,
//! have a bit flipped, or lose its tail. What survives arrives in order
//! after a latency plus a serialisation delay, so a slow link is also a
//! link where frames queue up. [`Pipe::cut`] ends the link and says how
//! much of what was in flight still arrived: often half a frame.

use std::collections::VecDeque;

use pickup_proto::{Duration, Instant};

use super::rng::SimRng;

/// How hostile a link is. Rates are per write, in parts per million.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Faults {
    /// The write never arrives.
    pub drop: u32,
    /// The write arrives twice.
    pub duplicate: u32,
    /// One bit of the write is flipped.
    pub flip: u32,
    /// Only a prefix of the write arrives.
    pub truncate: u32,
    /// Fixed one-way delay.
    pub latency: Duration,
    /// Bytes per millisecond (0: infinitely fast).
    pub bytes_per_ms: u64,
}

impl Faults {
    /// A perfect link with a little latency.
    pub fn clean() -> Faults {
        Faults {
            latency: Duration::from_millis(5),
            ..Faults::default()
        }
    }

    /// Random faults for one run: a quarter of the runs get a clean link,
    /// the rest between a little and a lot of damage, on links from a
    /// 9600-baud UART (about 1 byte/ms) to a fast LAN.
    pub fn random(rng: &mut SimRng) -> Faults {
        let latency = Duration::from_millis(rng.range(0, 200));
        let bytes_per_ms = [0, 1, 12, 1000][rng.below(4) as usize];
        if rng.chance(250_000) {
            return Faults {
                latency,
                bytes_per_ms,
                ..Faults::default()
            };
        }
        let level = [5_000, 20_000, 60_000, 120_000][rng.below(4) as usize];
        Faults {
            drop: rng.below(level) as u32,
            duplicate: rng.below(level) as u32,
            flip: rng.below(level) as u32,
            truncate: rng.below(level) as u32,
            latency,
            bytes_per_ms,
        }
    }
}

/// What a pipe did to the writes it carried, for reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PipeStats {
    /// Writes accepted.
    pub writes: u64,
    /// Bytes accepted.
    pub bytes: u64,
    /// Writes dropped.
    pub dropped: u64,
    /// Writes duplicated.
    pub duplicated: u64,
    /// Writes with a flipped bit.
    pub flipped: u64,
    /// Writes that lost their tail.
    pub truncated: u64,
}

/// One direction of a simulated link.
#[derive(Debug, Default)]
pub struct Pipe {
    in_flight: VecDeque<(Instant, Vec<u8>)>,
    /// When the last queued byte arrives: arrivals never reorder.
    busy_until: Instant,
    /// Counts of what happened.
    pub stats: PipeStats,
}

impl Pipe {
    /// An empty pipe.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sends `bytes` at `now`, damaged as `faults` and `rng` decide.
    pub fn send(&mut self, now: Instant, bytes: &[u8], faults: &Faults, rng: &mut SimRng) {
        self.stats.writes += 1;
        self.stats.bytes += bytes.len() as u64;
        if bytes.is_empty() {
            return;
        }
        if rng.chance(faults.drop) {
            self.stats.dropped += 1;
            return;
        }
        let mut data = bytes.to_vec();
        if rng.chance(faults.flip) {
            self.stats.flipped += 1;
            let bit = rng.below(data.len() as u64 * 8) as usize;
            data[bit / 8] ^= 1 << (bit % 8);
        }
        if rng.chance(faults.truncate) {
            self.stats.truncated += 1;
            data.truncate(rng.below(data.len() as u64) as usize);
        }
        let copies = if rng.chance(faults.duplicate) {
            self.stats.duplicated += 1;
            2
        } else {
            1
        };
        for _ in 0..copies {
            let wire_time = if faults.bytes_per_ms == 0 {
                0
            } else {
                (data.len() as u64).div_ceil(faults.bytes_per_ms)
            };
            let start = self.busy_until.max(now);
            self.busy_until = start + Duration::from_millis(wire_time);
            self.in_flight
                .push_back((self.busy_until + faults.latency, data.clone()));
        }
    }

    /// When the next bytes arrive, if any are in flight.
    pub fn next_arrival(&self) -> Option<Instant> {
        self.in_flight.front().map(|(at, _)| *at)
    }

    /// Takes the next write that has arrived by `now`.
    pub fn receive(&mut self, now: Instant) -> Option<Vec<u8>> {
        match self.in_flight.front() {
            Some((at, _)) if *at <= now => self.in_flight.pop_front().map(|(_, d)| d),
            _ => None,
        }
    }

    /// Whether nothing is in flight.
    pub fn is_idle(&self) -> bool {
        self.in_flight.is_empty()
    }

    /// The link breaks: returns the bytes that still arrive (a random
    /// prefix of everything in flight, so usually a frame cut in half) and
    /// forgets the rest.
    pub fn cut(&mut self, rng: &mut SimRng) -> Vec<u8> {
        let all: Vec<u8> = self.in_flight.drain(..).flat_map(|(_, d)| d).collect();
        self.busy_until = Instant::ZERO;
        let keep = rng.below(all.len() as u64 + 1) as usize;
        all[..keep].to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clean_pipe_delivers_everything_in_order_after_its_delays() {
        let faults = Faults {
            latency: Duration::from_millis(10),
            bytes_per_ms: 2,
            ..Faults::default()
        };
        let mut rng = SimRng::new(1);
        let mut pipe = Pipe::new();
        let t0 = Instant::from_millis(1000);
        pipe.send(t0, b"abcd", &faults, &mut rng);
        pipe.send(t0, b"ef", &faults, &mut rng);
        // 4 bytes take 2 ms, the next 2 bytes queue behind them.
        assert_eq!(pipe.next_arrival(), Some(Instant::from_millis(1012)));
        assert_eq!(pipe.receive(Instant::from_millis(1011)), None);
        assert_eq!(pipe.receive(Instant::from_millis(1012)).unwrap(), b"abcd");
        assert_eq!(pipe.next_arrival(), Some(Instant::from_millis(1013)));
        assert_eq!(pipe.receive(Instant::from_millis(2000)).unwrap(), b"ef");
        assert!(pipe.is_idle());
    }

    #[test]
    fn faults_happen_at_about_their_rates_and_damage_what_they_say() {
        let faults = Faults {
            drop: 100_000,
            duplicate: 100_000,
            flip: 100_000,
            truncate: 100_000,
            ..Faults::default()
        };
        let mut rng = SimRng::new(7);
        let mut pipe = Pipe::new();
        let msg = [0x55u8; 32];
        let mut intact = 0;
        let mut damaged = 0;
        for _ in 0..10_000 {
            pipe.send(Instant::ZERO, &msg, &faults, &mut rng);
            while let Some(d) = pipe.receive(Instant::ZERO) {
                if d == msg {
                    intact += 1;
                } else {
                    damaged += 1;
                    assert!(d.len() <= msg.len());
                }
            }
        }
        let s = pipe.stats;
        for n in [s.dropped, s.duplicated, s.flipped, s.truncated] {
            assert!((800..1200).contains(&n), "{s:?}");
        }
        assert!(intact > 7000 && damaged > 1500, "{intact} {damaged}");
    }

    #[test]
    fn a_cut_delivers_a_prefix_of_what_was_in_flight() {
        let faults = Faults::clean();
        let mut rng = SimRng::new(3);
        let mut lengths = std::collections::BTreeSet::new();
        for _ in 0..200 {
            let mut pipe = Pipe::new();
            pipe.send(Instant::ZERO, b"0123456789", &faults, &mut rng);
            pipe.send(Instant::ZERO, b"abcdef", &faults, &mut rng);
            let got = pipe.cut(&mut rng);
            assert_eq!(got[..], b"0123456789abcdef"[..got.len()]);
            assert!(pipe.is_idle());
            lengths.insert(got.len());
        }
        assert!(lengths.len() > 10, "cuts land everywhere: {lengths:?}");
    }
}
