//! Writing to stdout without panicking.
//!
//! `println!` panics when stdout's reader has gone (`pickup info CODE |
//! head -1`). A closed pipe is not an error of ours: the reader took what it
//! wanted, so `pickup` stops at once with exit code 0 and no message, as
//! ripgrep does (a send cut short this way keeps its resume state). Any
//! other write error is dropped as well: stdout is a report, and the exit
//! code already says whether the work was done.

use std::fmt;
use std::io::{self, Write};

/// Writes `args` to stdout and flushes, so scripts that read line by line
/// see each line when it is printed.
pub(crate) fn write(args: fmt::Arguments<'_>) {
    let mut stdout = io::stdout().lock();
    let result = stdout.write_fmt(args).and_then(|()| stdout.flush());
    if let Err(e) = result {
        if e.kind() == io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
    }
}

/// `print!` that exits quietly on a closed pipe (see the module docs).
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::out::write(format_args!($($arg)*))
    };
}

/// `println!` that exits quietly on a closed pipe (see the module docs).
macro_rules! outln {
    () => {
        $crate::cli::out::write(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::cli::out::write(format_args!("{}\n", format_args!($($arg)*)))
    };
}

pub(crate) use {out, outln};
