//! What the CLI prints: escaped names, the big code, dates, progress bars.

use std::cell::Cell;
use std::io::IsTerminal;

use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};
use pickup_proto::{Code, ErrorCode};

use crate::retransfer::LinkEvent;
use crate::LinkLoss;

/// A name from the wire made safe to print: control, invisible and
/// direction-changing characters become `\u{..}` escapes (the relay
/// validated the name, but a terminal must not be steered by it).
pub(crate) fn escape(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        let invisible = matches!(c as u32,
            0x00AD | 0x061C | 0x180E | 0x200B..=0x200F | 0x2028..=0x202E | 0x2060..=0x206F | 0xFEFF);
        if c == '\\' {
            out.push_str("\\\\");
        } else if c.is_control() || invisible {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

/// 5-row glyphs for the Crockford alphabet and the group separator.
fn glyph(c: char) -> [&'static str; 5] {
    match c {
        '0' => [" ### ", "#  ##", "# # #", "##  #", " ### "],
        '1' => ["  #  ", " ##  ", "  #  ", "  #  ", " ### "],
        '2' => [" ### ", "#   #", "  ## ", " #   ", "#####"],
        '3' => ["#### ", "    #", " ### ", "    #", "#### "],
        '4' => ["#   #", "#   #", "#####", "    #", "    #"],
        '5' => ["#####", "#    ", "#### ", "    #", "#### "],
        '6' => [" ### ", "#    ", "#### ", "#   #", " ### "],
        '7' => ["#####", "    #", "   # ", "  #  ", "  #  "],
        '8' => [" ### ", "#   #", " ### ", "#   #", " ### "],
        '9' => [" ### ", "#   #", " ####", "    #", " ### "],
        'A' => [" ### ", "#   #", "#####", "#   #", "#   #"],
        'B' => ["#### ", "#   #", "#### ", "#   #", "#### "],
        'C' => [" ####", "#    ", "#    ", "#    ", " ####"],
        'D' => ["#### ", "#   #", "#   #", "#   #", "#### "],
        'E' => ["#####", "#    ", "#### ", "#    ", "#####"],
        'F' => ["#####", "#    ", "#### ", "#    ", "#    "],
        'G' => [" ####", "#    ", "#  ##", "#   #", " ####"],
        'H' => ["#   #", "#   #", "#####", "#   #", "#   #"],
        'J' => ["  ###", "   # ", "   # ", "#  # ", " ##  "],
        'K' => ["#   #", "#  # ", "###  ", "#  # ", "#   #"],
        'M' => ["#   #", "## ##", "# # #", "#   #", "#   #"],
        'N' => ["#   #", "##  #", "# # #", "#  ##", "#   #"],
        'P' => ["#### ", "#   #", "#### ", "#    ", "#    "],
        'Q' => [" ### ", "#   #", "# # #", "#  # ", " ## #"],
        'R' => ["#### ", "#   #", "#### ", "#  # ", "#   #"],
        'S' => [" ####", "#    ", " ### ", "    #", "#### "],
        'T' => ["#####", "  #  ", "  #  ", "  #  ", "  #  "],
        'V' => ["#   #", "#   #", "#   #", " # # ", "  #  "],
        'W' => ["#   #", "#   #", "# # #", "## ##", "#   #"],
        'X' => ["#   #", " # # ", "  #  ", " # # ", "#   #"],
        'Y' => ["#   #", " # # ", "  #  ", "  #  ", "  #  "],
        'Z' => ["#####", "   # ", "  #  ", " #   ", "#####"],
        _ => ["   ", "   ", "###", "   ", "   "],
    }
}

/// The code in large block letters, two groups per row (fits 80
/// columns), then in plain text for copying.
pub(crate) fn banner(code: &Code) -> String {
    let text = code.to_string();
    let groups: Vec<&str> = text.split('-').collect();
    let mut out = String::new();
    for row in groups.chunks(2) {
        let line = row.join("-");
        for r in 0..5 {
            let mut s = String::from("  ");
            for c in line.chars() {
                s.push_str(&glyph(c)[r].replace('#', "\u{2588}"));
                s.push(' ');
            }
            out.push_str(s.trim_end());
            out.push('\n');
        }
        out.push('\n');
    }
    out.push_str(&format!("  pickup code: {text}\n"));
    out
}

/// `secs` since the Unix epoch as `YYYY-MM-DD HH:MM UTC`.
pub(crate) fn utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil-from-days (H. Hinnant), proleptic Gregorian.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        rem / 3_600,
        rem % 3_600 / 60
    )
}

/// `singular` for one, `plural` otherwise.
pub(crate) fn plural(n: usize, singular: &'static str, plural: &'static str) -> &'static str {
    if n == 1 {
        singular
    } else {
        plural
    }
}

/// Human size.
pub(crate) fn size(bytes: u64) -> String {
    HumanBytes(bytes).to_string()
}

/// A line the user needs whether or not stderr is a terminal (a wait, a
/// resume): above the bar on a terminal, else a plain line on stderr.
pub(crate) fn say(bar: &ProgressBar, tty: bool, line: &str) {
    if tty {
        bar.println(line);
    } else {
        eprintln!("{line}");
    }
}

/// `waiting: rate limited, retrying in 2.0 s`: a download the relay
/// refused for now, and when it asks again.
pub(crate) fn retrying_line(reason: ErrorCode, retry_in_ms: u32) -> String {
    let why = match reason {
        ErrorCode::RateLimited => "rate limited".to_string(),
        other => other.to_string(),
    };
    format!(
        "waiting: {why}, retrying in {:.1} s",
        f64::from(retry_in_ms) / 1000.0
    )
}

/// Progress on stderr when it is a terminal, nothing otherwise; link events
/// as lines on a terminal or with `--verbose`.
pub(crate) struct Ui {
    pub bar: ProgressBar,
    pub tty: bool,
    verbose: bool,
    /// The attempt a reconnect's "retry #N" label shows, until bytes
    /// flow again.
    retry: Cell<Option<u32>>,
}

impl Ui {
    pub fn new(verbose: bool) -> Ui {
        let tty = std::io::stderr().is_terminal();
        let bar = if tty {
            let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
            if let Ok(style) = ProgressStyle::with_template(
                "{msg:12} [{bar:32}] {bytes:>10}/{total_bytes:10} {binary_bytes_per_sec:>12} eta {eta}",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar
        } else {
            ProgressBar::hidden()
        };
        Ui {
            bar,
            tty,
            verbose,
            retry: Cell::new(None),
        }
    }

    /// Bytes moved: `done` of `total`. The bar's label goes back to
    /// `label`, so a "retry #N" from a reconnect goes once the transfer
    /// flows again; a line says so, as the end of the reconnect lines
    /// (and what a log without the bar shows).
    pub fn progress(&self, label: &'static str, done: u64, total: u64) {
        if let Some(attempt) = self.retry.take() {
            self.note(&format!(
                "link restored (attempt {attempt}): {label} again at {} of {}",
                size(done),
                size(total)
            ));
        }
        self.bar.set_message(label);
        self.bar.set_length(total);
        self.bar.set_position(done);
    }

    /// A line above the bar (or on stderr without one), if worth showing.
    pub fn note(&self, line: &str) {
        if self.tty {
            self.bar.println(line);
        } else if self.verbose {
            eprintln!("{line}");
        }
    }

    /// The relay refused for now and the command waits: always said, on
    /// a terminal or not, since a silent wait looks like a hang.
    pub fn waiting(&self, reason: ErrorCode, retry_after_ms: u32) {
        let line = if retry_after_ms > 0 {
            format!(
                "waiting: {reason} (the relay asks to retry in {:.1} s)",
                f64::from(retry_after_ms) / 1000.0
            )
        } else {
            format!("waiting: {reason}")
        };
        self.bar.set_message("waiting");
        say(&self.bar, self.tty, &line);
    }

    /// The relay refused for now and the session asks again after
    /// `retry_in_ms`: always said, like [`Ui::waiting`].
    pub fn retrying(&self, reason: ErrorCode, retry_in_ms: u32) {
        self.bar.set_message("waiting");
        say(&self.bar, self.tty, &retrying_line(reason, retry_in_ms));
    }

    pub fn link(&self, event: &LinkEvent) {
        match event {
            // An orderly stop is news even without --verbose: the wait
            // that follows is the relay's restart, not a broken network.
            LinkEvent::Lost(LinkLoss::ShuttingDown) => {
                self.bar.set_message("relay down");
                say(&self.bar, self.tty, "relay shutting down");
            }
            LinkEvent::Lost(why) => self.note(&format!("link lost: {why}")),
            LinkEvent::Reconnecting { attempt, after } => {
                self.retry.set(Some(*attempt));
                self.bar.set_message(format!("retry #{attempt}"));
                self.note(&format!(
                    "reconnecting in {:.1} s (attempt {attempt})",
                    after.as_millis() as f64 / 1000.0
                ));
            }
            LinkEvent::Reconnected { attempt } => {
                self.note(&format!("reconnected (attempt {attempt}), resuming"));
            }
            // The command's one-line error says it.
            _ => {}
        }
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_what_could_steer_a_terminal() {
        assert_eq!(escape("plain name.txt"), "plain name.txt");
        assert_eq!(escape("a\u{1b}[31mb"), "a\\u{1b}[31mb");
        assert_eq!(escape("evil\u{202e}txt.exe"), "evil\\u{202e}txt.exe");
        assert_eq!(escape("back\\slash"), "back\\\\slash");
        assert_eq!(escape("ünïcödé"), "ünïcödé");
    }

    /// Issue 18, item 7: the retry count goes once bytes flow again.
    #[test]
    fn flowing_again_clears_the_retry_count() {
        let ui = Ui {
            bar: ProgressBar::hidden(),
            tty: false,
            verbose: false,
            retry: Cell::new(None),
        };
        ui.progress("sending", 10, 100);
        ui.link(&LinkEvent::Reconnecting {
            attempt: 5,
            after: pickup_proto::Duration::from_millis(1),
        });
        ui.link(&LinkEvent::Reconnected { attempt: 5 });
        assert_eq!(ui.bar.message(), "retry #5");
        ui.progress("sending", 20, 100);
        assert_eq!(ui.bar.message(), "sending");
        assert_eq!(ui.bar.position(), 20);
        // Said once per reconnect, not at every step.
        assert_eq!(ui.retry.get(), None);
        ui.progress("sending", 30, 100);
        assert_eq!(ui.retry.get(), None);
    }

    #[test]
    fn dates() {
        assert_eq!(utc(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00 UTC");
        assert_eq!(utc(1_700_000_000), "2023-11-14 22:13 UTC");
    }

    #[test]
    fn banner_has_every_symbol_and_fits_80_columns() {
        let code = Code::parse("0123-4567-89AB-CDEF-GHJK-MNPQ").unwrap();
        let b = banner(&code);
        assert!(b.lines().all(|l| l.chars().count() <= 80), "{b}");
        assert!(b.ends_with("pickup code: 0123-4567-89AB-CDEF-GHJK-MNPQ\n"));
        let code = Code::parse("RSTV-WXYZ").unwrap();
        assert_eq!(
            banner(&code).lines().next().unwrap().chars().count(),
            2 + 9 * 6 - 1 - 2
        );
    }
}
