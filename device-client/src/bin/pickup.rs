//! The `pickup` command: send files to a relay, get them back by code.
//! See `pickup --help` and the `pickup_device::cli` docs.

fn main() -> std::process::ExitCode {
    pickup_device::cli::main()
}
