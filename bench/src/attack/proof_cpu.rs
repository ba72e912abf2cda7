//! Issue 20, item 4: CPU amplification. The attacking address holds a
//! 128 MiB blob of its own and a 64 MiB upload left at 24 MiB, then, in
//! rounds: announces the held content again and answers its challenge with
//! a wrong proof (each proof the relay checks is a pass over the blob),
//! resumes that batch three times for fresh challenges, and resumes the
//! partial upload on a new session with one byte of `Data` (a relay that
//! re-hashes the durable prefix on resume pays 24 MiB of SHA-1 for it).

use std::collections::BTreeMap;
use std::io;
use std::time::Duration;

use pickup_proto::message::{Data, Message, Plan, Proof, Resume, ResumeToken};
use pickup_proto::Sha1Digest;
use serde_json::{json, Value};

use super::connection::{connect_from, Conn, Reply};
use super::Ctx;

const HELD: usize = 128 << 20;
const PARTIAL: usize = 64 << 20;
/// How much of the partial upload is sent: within the relay's default
/// 32 MiB window, so it needs no acks to get there.
const PARTIAL_SENT: usize = 24 << 20;
/// More than fit in the time the honest runs take; the time ends them.
const ROUNDS: usize = 5_000;
const RESUMES_PER_ROUND: usize = 3;

/// What the rounds provoked.
#[derive(Default)]
struct Tally {
    challenges: u64,
    wrong_proofs: u64,
    resumes: u64,
    rehash_resumes: u64,
    /// Refusals by error code.
    refused: BTreeMap<String, u64>,
}

impl Tally {
    fn refused(&mut self, code: pickup_proto::ErrorCode) {
        *self.refused.entry(format!("{code:?}")).or_default() += 1;
    }
}

/// Starts the partial upload; its resume token.
fn partial_upload(ctx: &Ctx<'_>, content: &[u8]) -> io::Result<Result<ResumeToken, String>> {
    let mut c = Conn::open(ctx.relay, ctx.source)?;
    c.announce(&[(
        "partial.bin".into(),
        content.len() as u64,
        crate::sha1_fast(content),
    )])?;
    let token = match c.grant_and_plan()? {
        Ok((g, p)) if p.plan == (Plan::Upload { offset: 0 }) => g.token,
        Ok((_, p)) => return Ok(Err(format!("unexpected plan {:?}", p.plan))),
        Err(code) => return Ok(Err(format!("refused: {code:?}"))),
    };
    let step = Data::max_payload(pickup_proto::frame::MAX_FRAME_LEN);
    for offset in (0..PARTIAL_SENT).step_by(step) {
        let end = (offset + step).min(PARTIAL_SENT);
        c.send(Message::Data(Data {
            file: 0,
            offset: offset as u64,
            bytes: &content[offset..end],
        }))?;
    }
    // Durable before the session ends, so every resume finds it.
    let acked = c.expect(|r| match r {
        Reply::Ack(0, off) if *off >= PARTIAL_SENT as u64 => Some(()),
        _ => None,
    })?;
    Ok(acked
        .map(|()| token)
        .map_err(|code| format!("refused: {code:?}")))
}

/// One round against the held blob: announce it, prove wrongly, resume.
fn wrong_proof_round(c: &mut Conn, i: usize, sha1: Sha1Digest, t: &mut Tally) -> io::Result<()> {
    c.announce(&[(format!("p{i}"), HELD as u64, sha1)])?;
    let (grant, plan) = match c.grant_and_plan()? {
        Ok(gp) => gp,
        Err(code) => {
            t.refused(code);
            return Ok(());
        }
    };
    if let Plan::Challenge { .. } = plan.plan {
        t.challenges += 1;
        c.send(Message::Proof(Proof {
            index: 0,
            proof: Sha1Digest::of(b"a guess"),
        }))?;
        t.wrong_proofs += 1;
        if let Err(code) = c.expect(|r| matches!(r, Reply::Plan(_)).then_some(()))? {
            t.refused(code);
        }
    }
    for _ in 0..RESUMES_PER_ROUND {
        c.send(Message::Resume(Resume { token: grant.token }))?;
        t.resumes += 1;
        match c.grant_and_plan()? {
            Ok((_, p)) if matches!(p.plan, Plan::Challenge { .. }) => t.challenges += 1,
            Ok(_) => {}
            Err(code) => t.refused(code),
        }
    }
    Ok(())
}

/// Hello, `Resume`, one byte of `Data` at the durable offset, on a new session.
fn rehash_round(
    ctx: &Ctx<'_>,
    token: ResumeToken,
    content: &[u8],
    t: &mut Tally,
) -> io::Result<u64> {
    let mut r = Conn::open(ctx.relay, ctx.source)?;
    r.send(Message::Resume(Resume { token }))?;
    match r.grant_and_plan()? {
        Ok((_, p)) => {
            if let Plan::Upload { offset } = p.plan {
                let at = offset as usize;
                if let Some(byte) = content.get(at..at + 1) {
                    r.send(Message::Data(Data {
                        file: 0,
                        offset,
                        bytes: byte,
                    }))?;
                    t.rehash_resumes += 1;
                }
            }
        }
        Err(code) => t.refused(code),
    }
    Ok(r.sent)
}

/// Sets up the held blob and the partial upload, then runs rounds until
/// the honest transfer is over or [`ROUNDS`] are done.
pub fn run(ctx: &Ctx<'_>) -> io::Result<Value> {
    let held = crate::random_bytes(HELD, 41);
    let sha1 = crate::sha1_fast(&held);
    let mut link = connect_from(ctx.relay, ctx.source)?;
    let up = crate::client::upload(
        &mut link,
        crate::tcp_upload_config(),
        &["held.bin".into()],
        std::slice::from_ref(&held),
        &[sha1],
    );
    drop(link);
    drop(held);
    if let Err(e) = up {
        return Ok(json!({ "setup_refused": format!("uploading the held blob: {e}") }));
    }
    let partial = crate::random_bytes(PARTIAL, 42);
    let token = match partial_upload(ctx, &partial)? {
        Ok(token) => token,
        Err(why) => return Ok(json!({ "setup_refused": format!("partial upload: {why}") })),
    };
    ctx.arm();

    let mut t = Tally::default();
    let mut c = Conn::open(ctx.relay, ctx.source)?;
    let mut bytes = 0;
    let mut rounds = 0;
    for i in 0..ROUNDS {
        if ctx.done() {
            break;
        }
        let refused = t.refused.values().sum::<u64>();
        wrong_proof_round(&mut c, i, sha1, &mut t)?;
        bytes += rehash_round(ctx, token, &partial, &mut t)?;
        rounds += 1;
        if t.refused.values().sum::<u64>() > refused {
            // Told to wait: a guesser would, briefly.
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let refused: Vec<String> = t.refused.iter().map(|(k, n)| format!("{n} {k}")).collect();
    Ok(json!({
        "summary": format!(
            "{rounds} rounds: {} challenges of a {} MiB blob, {} wrong proofs, \
             {} one-byte resumes of a {} MiB prefix; refused: {}",
            t.challenges,
            HELD >> 20,
            t.wrong_proofs,
            t.rehash_resumes,
            PARTIAL_SENT >> 20,
            if refused.is_empty() { "never".to_string() } else { refused.join(", ") }
        ),
        "held_bytes": HELD,
        "partial_bytes_durable": PARTIAL_SENT,
        "rounds": rounds,
        "challenges": t.challenges,
        "wrong_proofs": t.wrong_proofs,
        "resumes_of_held_batches": t.resumes,
        "resumes_with_one_byte": t.rehash_resumes,
        "refused": t.refused,
        "bytes_sent_in_rounds": bytes + c.sent,
    }))
}
