//! A listing verb whose stdout is closed (`faultline fault kinds | head -1`) ends quietly, as
//! a Unix filter does, rather than panicking on the broken pipe.

#[cfg(unix)]
#[test]
fn a_listing_verb_ends_quietly_when_its_reader_is_gone() {
    use std::os::unix::process::ExitStatusExt as _;
    for args in [&["fault", "kinds"][..], &["drill", "list"][..]] {
        // The reader is gone before the child writes: its first write hits a closed pipe.
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_faultline"))
            .args(args)
            .env("RUST_BACKTRACE", "0")
            .stdout(writer)
            .stderr(std::process::Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_eq!(
            out.status.signal(),
            Some(libc::SIGPIPE),
            "{args:?}: {:?} {stderr}",
            out.status
        );
    }
}
