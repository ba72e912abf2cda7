//! The firmware test's child processes (QEMU, the relay's helpers) and
//! the transcript of what they print.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::thread;
use std::time::{Duration, Instant};

/// A child process that is killed when the test ends, however it ends.
pub struct Process {
    pub child: Child,
}

impl Process {
    /// Starts `cmd` with its stdout and stderr sent, line by line, to `lines`.
    pub fn spawn(name: &'static str, mut cmd: Command, lines: &Sender<Line>) -> Process {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        forward(name, child.stdout.take().expect("piped"), lines.clone());
        forward(name, child.stderr.take().expect("piped"), lines.clone());
        Process { child }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One line of output of one process.
pub struct Line {
    from: &'static str,
    text: String,
}

fn forward(from: &'static str, stream: impl Read + Send + 'static, lines: Sender<Line>) {
    thread::spawn(move || {
        for text in BufReader::new(stream).lines() {
            let Ok(text) = text else { break };
            if lines.send(Line { from, text }).is_err() {
                break;
            }
        }
    });
}

/// Everything the processes printed, for assertions and failure messages.
#[derive(Default)]
pub struct Transcript {
    lines: Vec<String>,
    /// QEMU's output: the firmware's semihosting prints.
    pub firmware: Vec<String>,
}

impl Transcript {
    fn take(&mut self, line: Line) {
        self.lines.push(format!("[{}] {}", line.from, line.text));
        if line.from == "qemu" {
            self.firmware.push(line.text);
        }
    }

    /// Waits up to 100 ms (and not past `deadline`) for the next line;
    /// keeps it and returns its text.
    pub fn next(&mut self, lines: &Receiver<Line>, deadline: Instant) -> Option<String> {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left.min(Duration::from_millis(100))) {
            Ok(line) => {
                let text = line.text.clone();
                self.take(line);
                Some(text)
            }
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => None,
        }
    }

    pub fn dump(&self) -> String {
        self.lines.join("\n")
    }
}
