//! Replays a fuzz input with a trace on stderr:
//! `cargo run -p pickup-tests --example replay_fuzz -- TARGET FILE`.

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(target), Some(path)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: replay_fuzz TARGET FILE   (TARGET: relay_session, upload_session, download_session, notice_session, frame_decoder, message_decode)");
        std::process::exit(2);
    };
    let data = std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    match target.as_str() {
        "relay_session" => println!("{:?}", pickup_tests::fuzz_relay::drive_relay_traced(&data)),
        "upload_session" => println!("{:?}", pickup_tests::fuzz_proto::drive_upload(&data)),
        "download_session" => println!("{:?}", pickup_tests::fuzz_proto::drive_download(&data)),
        "notice_session" => println!("{:?}", pickup_tests::fuzz_proto::drive_notice(&data)),
        "frame_decoder" => println!("{} frames", pickup_tests::fuzz_proto::decode_stream(&data)),
        "message_decode" => println!(
            "message: {}",
            pickup_tests::fuzz_proto::decode_message(&data)
        ),
        other => panic!("unknown target {other}"),
    }
}
