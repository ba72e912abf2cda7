//! What a seed uploads ([`BatchSpec`], [`batches_for`]) and running many
//! seeds on threads ([`run_many`]).

use super::*;

/// One batch the run uploads.
#[derive(Debug, Clone)]
pub struct BatchSpec {
    /// File names.
    pub names: Vec<String>,
    /// File contents.
    pub contents: Vec<Vec<u8>>,
}

impl BatchSpec {
    pub(super) fn random(rng: &mut SimRng, index: usize) -> BatchSpec {
        let files = rng.range(1, 3) as usize;
        let mut names = Vec::new();
        let mut contents = Vec::new();
        for i in 0..files {
            let size = match rng.below(40) {
                0..=3 => 0,
                4..=15 => rng.range(1, 100),
                16..=35 => rng.range(100, 3000),
                36..=38 => rng.range(3000, 20_000),
                _ => rng.range(20_000, 150_000),
            } as usize;
            let mut data = vec![0u8; size];
            rng.fill(&mut data);
            names.push(format!("b{index}-f{i}.bin"));
            contents.push(data);
        }
        BatchSpec { names, contents }
    }

    pub(super) fn total(&self) -> u64 {
        self.contents.iter().map(|c| c.len() as u64).sum()
    }
}

/// The files a seed uploads: made before the world, which borrows their names.
pub fn batches_for(seed: u64) -> Vec<BatchSpec> {
    let mut specs = code_batches_for(seed);
    if named::enabled(seed) {
        // Its last batch binds the first one's names to other content.
        let replacement = named::replacement(seed, &specs[0]);
        specs.push(replacement);
    }
    specs
}

/// The batches of [`batches_for`] whatever the named files.
pub(super) fn code_batches_for(seed: u64) -> Vec<BatchSpec> {
    let mut rng = SimRng::new(seed ^ 0x0ba7_c4e5);
    let mut first = BatchSpec::random(&mut rng, 0);
    match rng.below(10) {
        // The same content again: instant upload after a proof.
        0..=2 => {
            let mut again = first.clone();
            for (i, n) in again.names.iter_mut().enumerate() {
                *n = format!("again-{i}.bin");
            }
            vec![first, again]
        }
        // A SHA-1 collision: the second batch holds the other file of a
        // pair with the same size and SHA-1. Its proof fails, its bytes
        // are uploaded, and each batch must download its own bytes.
        3 => {
            let (a, b) = sha1_collision();
            let (a, b) = if rng.chance(500_000) { (a, b) } else { (b, a) };
            let at = rng.below(first.contents.len() as u64 + 1) as usize;
            first.contents.insert(at, a);
            first.names.insert(at, "twin.bin".to_owned());
            let mut twin = first.clone();
            twin.contents[at] = b;
            for (i, n) in twin.names.iter_mut().enumerate() {
                *n = format!("other-{i}.bin");
            }
            vec![first, twin]
        }
        _ => vec![first],
    }
}

/// The SHAmbles pair (640 bytes each, equal SHA-1, different bytes) from
/// `testdata/sha1-collisions/`.
pub(super) fn sha1_collision() -> (Vec<u8>, Vec<u8>) {
    static PAIR: std::sync::OnceLock<(Vec<u8>, Vec<u8>)> = std::sync::OnceLock::new();
    PAIR.get_or_init(|| {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../testdata/sha1-collisions/");
        let read = |name: &str| {
            std::fs::read(format!("{dir}{name}")).unwrap_or_else(|e| {
                panic!("{dir}{name}: {e} (the repository's testdata/sha1-collisions/)")
            })
        };
        let pair = (read("sha-mbles-1.bin"), read("sha-mbles-2.bin"));
        assert_ne!(pair.0, pair.1);
        assert_eq!(Sha1Digest::of(&pair.0), Sha1Digest::of(&pair.1));
        pair
    })
    .clone()
}

/// Runs `seeds` seeds from `first` on `threads` threads; returns the
/// reports and, for each failing seed, its panic message.
pub fn run_many(first: u64, seeds: u64, threads: usize) -> (Vec<Report>, BTreeMap<u64, String>) {
    super::seeds::run_seeds(first, seeds, threads, |seed| {
        run_seed(seed, Options::default())
    })
}
